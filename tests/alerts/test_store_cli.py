"""`facescreen tokens`, `facescreen alerts purge` and `facescreen alert-store` start-up errors."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import pytest
from facescreen.alerts.store import AlertStore, sqlite_url
from facescreen.cli.main import main

from tests.alerts.factory import JPEG, alert_event


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_tokens_cli_prints_the_secret_once_and_never_again(
        db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "tokens", "create", "--db", db_url, "--role", "reviewer",
                          "--name", "night shift")
    assert code == 0 and "created" in err
    secret = out.strip()
    assert "\n" not in secret and secret.startswith("fst_")
    store = AlertStore(db_url)
    try:
        record = store.check_token(secret)
        assert record is not None and (record.role, record.name) == ("reviewer", "night shift")
        code, listing, _ = _run(capsys, "tokens", "list", "--db", db_url)
        assert code == 0 and record.token_id in listing and "night shift" in listing
        assert secret not in listing and secret[4:20] not in listing
        code, out, _ = _run(capsys, "tokens", "revoke", "--db", db_url, record.token_id)
        assert code == 0 and "revoked" in out
        assert store.check_token(secret) is None
        code, listing, _ = _run(capsys, "tokens", "list", "--db", db_url, "--json")
        assert code == 0 and '"revoked_at": null' not in listing and secret not in listing
    finally:
        store.close()
    code, out, err = _run(capsys, "tokens", "revoke", "--db", db_url, "no-such-token")
    assert code == 2 and err.strip() == "facescreen: error: no token with id 'no-such-token'"


def test_purge_cli_on_a_data_directory_deletes_old_alerts_and_their_crops(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = AlertStore(sqlite_url(tmp_path), crops_dir=tmp_path / "crops")
    store.upgrade()
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    store.ingest(alert_event(old, emitted_at=time.time() - 31 * 86_400))
    store.ingest(alert_event(new, emitted_at=time.time()))
    store.save_crop(old, JPEG)
    store.save_crop(new, JPEG)
    code, out, _ = _run(capsys, "alerts", "purge", "--data-dir", str(tmp_path),
                        "--older-than", "30d")
    assert code == 0 and out.strip() == "purged 1 alert(s) older than 30d"
    assert store.get(old) is None and store.get(new) is not None
    assert [p.name for p in (tmp_path / "crops").iterdir()] == [f"{new}.jpg"]
    store.close()


@pytest.mark.parametrize(("argv", "message"), [
    (["tokens", "list", "--db", "mysql://u@h/db"], "driver 'mysql' is not supported"),
    (["tokens", "list", "--db", "postgresql+psycopg://u:hunter2@127.0.0.1:1/x"],
     "Connection refused"),
    (["tokens", "list", "--data-dir", "/no/such/dir"], "data directory /no/such/dir does not exist"),
    (["alerts", "purge", "--db", "sqlite://", "--older-than", "soon"], "--older-than: age 'soon'"),
    (["alert-store", "--bootstrap", ",", "--db", "sqlite://"], "no bootstrap server"),
])
def test_bad_input_is_one_line_with_status_2(argv: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == 2 and message in err and "hunter2" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("facescreen: error: ")


def test_alert_store_refuses_missing_topics(broker: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # the service sets up JSON logging
    try:
        code, _, err = _run(capsys, "alert-store", "--bootstrap", broker, "--db",
                            sqlite_url(tmp_path),
                            "--topic-prefix", f"absent-{uuid.uuid4().hex[:6]}.",
                            "--http-port", "0")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert code == 2 and "missing topic(s)" in err and "facescreen topics create" in err
