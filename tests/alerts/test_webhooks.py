"""Webhooks against a real HTTP receiver on 127.0.0.1 that fails its first attempts."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from facescreen.alerts.webhook_routes import WebhookConfigError, load_routes
from facescreen.alerts.webhooks import MemoryRecorder, WebhookSender, encode_body, sign, verify_signature

from tests.alerts.receiver import SECRET, Receiver, event, route, sender, serving


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    """A receiver answering the test's parametrized script (then 200)."""
    with serving(getattr(request, "param", [])) as rx:
        yield rx

@pytest.mark.parametrize("receiver", [["500", "hang", "200"]], indirect=True)
def test_delivered_once_after_a_500_and_a_timeout_same_key_signed(
        receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    recorder = MemoryRecorder()
    ev = event(revision=2)
    with sender(receiver, recorder=recorder) as s:
        outcome = s.deliver(ev)
    assert outcome is not None
    assert (outcome.status, outcome.attempts, outcome.http_status, outcome.last_error) == (
        "delivered", 3, 200, None)
    assert [r["action"] for r in receiver.requests] == ["500", "hang", "200"]
    assert {r["key"] for r in receiver.requests} == {f"{ev['alert_id']}:2"}
    assert all(r["verified"] for r in receiver.requests)
    assert all(r["body"] == encode_body(ev) for r in receiver.requests)
    assert json.loads(receiver.accepted[f"{ev['alert_id']}:2"]) == ev
    assert len(receiver.accepted) == 1
    # The store sees: pending, each failure with its error and next try, then delivered.
    assert [(o.status, o.attempts, o.last_error) for o in recorder.history] == [
        ("pending", 0, None), ("pending", 1, "HTTP 500"), ("pending", 2, "ReadTimeout"),
        ("delivered", 3, None)]
    assert all(o.next_attempt_at is not None for o in recorder.history[1:3])
    assert SECRET not in caplog.text
    assert "attempt 1/5 failed" in caplog.text and "delivered" in caplog.text


@pytest.mark.parametrize("receiver", [["500"] * 10], indirect=True)
def test_dead_after_n_failures_with_the_last_error(receiver: Receiver,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    dead: list[Any] = []
    waits: list[float] = []
    with sender(receiver, waits=waits, max_attempts=4, on_dead=dead.append, initial_wait_s=0.02,
                jitter_s=0.005, max_wait_s=1.0) as s:
        outcome = s.deliver(event())
    assert outcome is not None
    assert (outcome.status, outcome.attempts, outcome.last_error) == ("dead", 4, "HTTP 500")
    assert len(receiver.requests) == 4 and not receiver.accepted
    assert [d.status for d in dead] == ["dead"]
    # Exponential with jitter: 0.02, 0.04, 0.08 each plus at most 0.005.
    assert len(waits) == 3
    for i, w in enumerate(waits):
        assert 0.02 * 2 ** i <= w <= 0.02 * 2 ** i + 0.005
    assert "webhook dead" in caplog.text and SECRET not in caplog.text


@pytest.mark.parametrize("receiver", [["400"]], indirect=True)
def test_a_refusal_is_not_retried(receiver: Receiver) -> None:
    with sender(receiver) as s:
        outcome = s.deliver(event())
    assert outcome is not None
    assert (outcome.status, outcome.attempts, outcome.http_status) == ("dead", 1, 400)
    assert outcome.last_error is not None and "not retried" in outcome.last_error
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("receiver", [["429:1", "503", "200"]], indirect=True)
def test_retry_after_is_honoured_up_to_the_ceiling(receiver: Receiver) -> None:
    waits: list[float] = []
    with sender(receiver, waits=waits, max_wait_s=0.5) as s:
        outcome = s.deliver(event())
    assert outcome is not None and outcome.status == "delivered" and outcome.attempts == 3
    assert waits[0] == 0.5  # Retry-After: 1, capped by max_wait_s
    assert waits[1] < 0.1


def test_unreachable_receiver_is_dead_with_a_transport_error() -> None:
    with WebhookSender(route("http://127.0.0.1:9/hook"), max_attempts=2, initial_wait_s=0.01,
                       jitter_s=0.0, timeout_s=0.5) as s:
        outcome = s.deliver(event())
    assert outcome is not None and outcome.status == "dead" and outcome.last_error == "ConnectError"


def test_no_route_no_delivery_and_invalid_events_are_refused(receiver: Receiver) -> None:
    with sender(receiver) as s:
        assert s.deliver(event(watchlist="other")) is None
        with pytest.raises(jsonschema.ValidationError):
            s.deliver({**event(), "score": 3.0})
    assert receiver.requests == []


def test_verify_signature_refuses_tampering_staleness_and_garbage() -> None:
    body = encode_body(event())
    now = 1_700_000_000
    header = sign(SECRET, now, body)
    assert verify_signature(SECRET, str(now), body, header, max_age_s=300, now=now + 10)
    assert verify_signature(SECRET.encode(), now, body, header, max_age_s=300, now=now)
    tampered = body.replace(b'"score":0.72', b'"score":0.99')
    assert tampered != body
    assert not verify_signature(SECRET, now, tampered, header, max_age_s=300, now=now)
    assert not verify_signature(SECRET, now, body, header, max_age_s=300, now=now + 301)  # stale
    assert not verify_signature(SECRET, now, body, header, max_age_s=300, now=now - 301)  # ahead
    assert not verify_signature(SECRET, now + 1, body, header, max_age_s=300, now=now)  # ts swapped
    assert not verify_signature("another-secret-0123456789", now, body, header, 300, now=now)
    for bad_ts in (None, "", "abc", "-5", "1e9", "١٢٣"):
        assert not verify_signature(SECRET, bad_ts, body, header, max_age_s=300, now=now)
    for bad_header in (None, "", header[len("sha256="):], "sha1=" + header[7:], header + "0", "sha256=é"):
        assert not verify_signature(SECRET, now, body, bad_header, max_age_s=300, now=now)


def test_routes_from_toml_secrets_from_the_environment_only(tmp_path: Path) -> None:
    path = tmp_path / "webhooks.toml"
    path.write_text('[webhooks.vip]\nurl = "https://rx.example/hook"\nsecret_env = "VIP_HOOK"\n'
                    'max_attempts = 3\n[webhooks."staff list"]\nurl = "http://127.0.0.1:8080/x"\n'
                    'secret_env = "STAFF_HOOK"\ntimeout_s = 2.5\n')
    routes = load_routes(path, {"VIP_HOOK": SECRET, "STAFF_HOOK": SECRET[::-1]})
    assert sorted(routes) == ["staff list", "vip"]
    assert routes["vip"].secret == SECRET.encode() and routes["vip"].max_attempts == 3
    assert routes["staff list"].timeout_s == 2.5
    assert SECRET not in repr(routes) and SECRET not in str(routes)

    def refused(text: str, env: dict[str, str], match: str) -> None:
        path.write_text(text)
        with pytest.raises(WebhookConfigError, match=match) as info:
            load_routes(path, env)
        assert SECRET not in str(info.value)

    ok = '[webhooks.vip]\nurl = "https://rx.example/hook"\n'
    refused(ok + f'secret = "{SECRET}"\nsecret_env = "VIP_HOOK"\n', {"VIP_HOOK": SECRET}, "inline secret")
    refused(ok + 'secret_env = "VIP_HOOK"\n', {}, "VIP_HOOK is not set")
    refused(ok + 'secret_env = "VIP_HOOK"\n', {"VIP_HOOK": "short"}, "shorter than 16")
    refused('[webhooks.vip]\nurl = "ftp://rx.example/"\nsecret_env = "V"\n', {"V": SECRET}, "http")
    refused(ok + 'secret_env = "V"\nretries = 3\n', {"V": SECRET}, "unknown key")
    refused(ok + 'secret_env = "V"\nmax_attempts = 0\n', {"V": SECRET}, "max_attempts")
    refused(ok + 'secret_env = "V"\ntimeout_s = true\n', {"V": SECRET}, "timeout_s")
    refused("webhooks = 3\n", {}, "must be a table")
    refused("[webhooks.vip\n", {}, "not valid TOML")
    with pytest.raises(WebhookConfigError, match="cannot read"):
        load_routes(tmp_path / "absent.toml")
