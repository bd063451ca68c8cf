"""The FACESCREEN_* environment: one model, each bad variable exactly one line naming it
(exit 2 from any command), secrets never shown, and the readers take their values from it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from facescreen.bus.security import KafkaSecurity, KafkaSecurityError
from facescreen.cli.common import _index_kind, actor
from facescreen.cli.main import main, parser
from facescreen.config.environment import EnvironmentConfigError, environment
from facescreen.models.sources import cache_dir

K = "FACESCREEN_KAFKA_"
SASL = {f"{K}SECURITY_PROTOCOL": "SASL_SSL", f"{K}SASL_USERNAME": "matcher",
        f"{K}SASL_PASSWORD": "hunter2"}

BAD = [
    ({"FACESCREEN_REDIS_INDEX": "ivf"},
     "FACESCREEN_REDIS_INDEX: should be 'FLAT' or 'HNSW', got 'IVF'"),
    ({"FACESCREEN_BOOTSTRAP": "kafka:0"},
     "FACESCREEN_BOOTSTRAP: bootstrap server 'kafka:0' is not HOST:PORT (port 1..65535)"),
    ({"FACESCREEN_BOOTSTRAP": "kafka:9092,broker two:9092"},
     "FACESCREEN_BOOTSTRAP: bootstrap server 'broker two:9092' is not HOST:PORT "
     "(port 1..65535), got 'kafka:9092,broker two:9092'"),
    ({"FACESCREEN_BOOTSTRAP": ","},
     "FACESCREEN_BOOTSTRAP: no bootstrap server given (HOST:PORT[,HOST:PORT...]), got ','"),
    ({"FACESCREEN_TOPIC_PREFIX": "site/a."},
     "FACESCREEN_TOPIC_PREFIX: a topic prefix may hold only letters, digits, '.', '_' and "
     "'-' (at most 200), got 'site/a.'"),
    ({"FACESCREEN_ACTOR": "ann\x1b[2J"},
     "FACESCREEN_ACTOR: must be 1-128 printable characters, got 'ann\\x1b[2J'"),
    ({"FACESCREEN_ACTOR": "   "}, "FACESCREEN_ACTOR: must be 1-128 printable characters, "
     "got '   '"),
    ({f"{K}SECURITY_PROTOCOL": "TLS"},
     f"{K}SECURITY_PROTOCOL: should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL', "
     "got 'TLS'"),
    ({**SASL, f"{K}SASL_MECHANISM": "GSSAPI"},
     f"{K}SASL_MECHANISM: should be 'SCRAM-SHA-512', 'SCRAM-SHA-256' or 'PLAIN', "
     "got 'GSSAPI'"),
    ({f"{K}SECURITY_PROTOCOL": "SASL_SSL", f"{K}SASL_USERNAME": "matcher"},
     f"{K}SECURITY_PROTOCOL: SASL_SSL needs {K}SASL_USERNAME and {K}SASL_PASSWORD"),
    ({f"{K}SASL_USERNAME": "matcher", f"{K}SASL_PASSWORD": "hunter2"},
     f"{K}SECURITY_PROTOCOL: SASL settings given but the protocol is PLAINTEXT: they would "
     "be ignored"),
    ({f"{K}SECURITY_PROTOCOL": "SSL", f"{K}SASL_MECHANISM": "SCRAM-SHA-256"},
     f"{K}SECURITY_PROTOCOL: SASL settings given but the protocol is SSL: they would be "
     "ignored"),
    ({**SASL, f"{K}SECURITY_PROTOCOL": "SASL_PLAINTEXT", f"{K}SASL_MECHANISM": "PLAIN"},
     f"{K}SASL_MECHANISM: PLAIN sends the password in clear: use SASL_SSL"),
    ({**SASL, f"{K}SASL_PASWORD": "hunter2"},
     f"{K}SASL_PASWORD: unknown variable (known: {K}SASL_MECHANISM, {K}SASL_PASSWORD, "
     f"{K}SASL_USERNAME, {K}SECURITY_PROTOCOL, {K}SSL_CAFILE)"),
]


@pytest.mark.parametrize(("env", "message"), BAD)
def test_each_bad_variable_is_exactly_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(EnvironmentConfigError) as caught:
        environment(env)
    assert str(caught.value) == message
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(("env", "message"), [BAD[0], BAD[4], BAD[9], BAD[13]])
def test_any_command_reports_it_and_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        env: dict[str, str], message: str) -> None:
    assert main(["watchlist", "list", "--data-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["watchlist", "list", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"facescreen: error: {message}\n"


def test_defaults_empty_values_and_other_names() -> None:
    env = environment({"FACESCREEN_BOOTSTRAP": "", "FACESCREEN_INFERENCE": "onnx",
                       "ENTRANCE1_URI": "rtsp://x", "FACESCREEN_WEBHOOK_SECRET_VIP": "s"})
    assert env.bootstrap is None and env.topic_prefix == "" and env.redis_index == "FLAT"
    assert (env.kafka_protocol, env.kafka_mechanism, env.alerts_db) == ("PLAINTEXT", None, None)


def test_secrets_are_secret_types_and_never_shown() -> None:
    env = environment({**SASL, f"{K}SECURITY_PROTOCOL": "sasl_ssl",
                       "FACESCREEN_ALERTS_DB": "postgresql://fs:pg-pass@db:5432/alerts",
                       "FACESCREEN_BOOTSTRAP": "kafka-0:9093,[::1]:9093"})
    assert env.kafka_protocol == "SASL_SSL" and env.kafka_mechanism == "SCRAM-SHA-512"
    assert env.kafka_password is not None and env.kafka_password.get_secret_value() == "hunter2"
    assert env.alerts_db is not None and "pg-pass" in env.alerts_db.get_secret_value()
    for text in (repr(env), str(env)):
        assert "hunter2" not in text and "pg-pass" not in text, text


def test_the_kafka_clients_read_the_model(tmp_path: Path) -> None:
    security = KafkaSecurity.from_env({**SASL, f"{K}SASL_MECHANISM": "scram-sha-256"})
    assert security.kafka_python_options()["sasl_mechanism"] == "SCRAM-SHA-256"
    assert "hunter2" not in repr(security)
    with pytest.raises(KafkaSecurityError) as caught:  # checked when a client is built
        KafkaSecurity.from_env({f"{K}SECURITY_PROTOCOL": "SSL",
                                f"{K}SSL_CAFILE": str(tmp_path / "ca.pem")})
    assert str(caught.value) == f"{K}SSL_CAFILE: {tmp_path / 'ca.pem'} is not a file"


def test_the_other_readers_take_their_values_from_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESCREEN_REDIS_INDEX", " hnsw")
    monkeypatch.setenv("FACESCREEN_ACTOR", "reviewer-7")
    monkeypatch.setenv("FACESCREEN_CACHE", str(tmp_path))
    monkeypatch.setenv("FACESCREEN_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("FACESCREEN_TOPIC_PREFIX", "stack-2.")
    monkeypatch.setenv("FACESCREEN_ALERTS_DB", f"sqlite:///{tmp_path}/alerts.db")
    assert _index_kind() == "HNSW"
    assert actor(argparse.Namespace()) == "reviewer-7"
    assert cache_dir() == tmp_path
    topics = parser().parse_args(["topics", "create"])
    assert (topics.bootstrap, topics.topic_prefix) == ("kafka:9092", "stack-2.")
    purge = parser().parse_args(["alerts", "purge", "--older-than", "30d"])
    assert purge.db == f"sqlite:///{tmp_path}/alerts.db"
