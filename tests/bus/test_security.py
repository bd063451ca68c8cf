"""Kafka TLS/SASL settings from the environment: every client gets the same options, and
inconsistent settings are one clear error (the password never shown)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from facescreen.bus.security import KafkaSecurity, KafkaSecurityError, kafka_options
from facescreen.cli.main import main

P = "FACESCREEN_KAFKA_"


def test_default_is_plaintext_with_nothing_else() -> None:
    assert KafkaSecurity.from_env({}).kafka_python_options() == {
        "security_protocol": "PLAINTEXT"}


def test_scram_over_tls_for_kafka_python_and_aiokafka(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")  # the path is passed on, not parsed here
    env = {f"{P}SECURITY_PROTOCOL": "sasl_ssl", f"{P}SASL_USERNAME": "matcher",
           f"{P}SASL_PASSWORD": "pw-s3cret", f"{P}SSL_CAFILE": str(ca)}
    security = KafkaSecurity.from_env(env)
    assert security.kafka_python_options() == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "matcher", "sasl_plain_password": "pw-s3cret",
        "ssl_check_hostname": True, "ssl_cafile": str(ca)}
    assert "pw-s3cret" not in repr(security)
    system = KafkaSecurity.from_env({**env, f"{P}SSL_CAFILE": ""})
    options = system.aiokafka_options()
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(("env", "message"), [
    ({f"{P}SECURITY_PROTOCOL": "TLS"}, "SECURITY_PROTOCOL: should be .PLAINTEXT."),
    ({f"{P}SECURITY_PROTOCOL": "SASL_SSL"}, "needs FACESCREEN_KAFKA_SASL_USERNAME"),
    ({f"{P}SECURITY_PROTOCOL": "SASL_SSL", f"{P}SASL_MECHANISM": "GSSAPI",
      f"{P}SASL_USERNAME": "u", f"{P}SASL_PASSWORD": "p"}, "SASL_MECHANISM: should be "),
    ({f"{P}SASL_USERNAME": "u", f"{P}SASL_PASSWORD": "p"}, "would be ignored"),
    ({f"{P}SECURITY_PROTOCOL": "SASL_PLAINTEXT", f"{P}SASL_MECHANISM": "PLAIN",
      f"{P}SASL_USERNAME": "u", f"{P}SASL_PASSWORD": "p"}, "in clear"),
    ({f"{P}SECURITY_PROTOCOL": "SSL", f"{P}SSL_CAFILE": "/nonexistent/ca.pem"}, "not a file"),
])
def test_inconsistent_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(KafkaSecurityError, match=message) as caught:
        KafkaSecurity.from_env(env)
    assert "=p" not in str(caught.value) and "'p'" not in str(caught.value)  # no password


def test_a_command_reports_bad_kafka_settings_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{P}SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(KafkaSecurityError):
        kafka_options()
    code = main(["alerts", "reject", "--data-dir", str(tmp_path),
                 "5b0f8a6e-3c1d-4d2e-9a57-6b1f0c2e9d41", "--bootstrap", "127.0.0.1:9",
                 "--camera", "cam1"])
    err = capsys.readouterr().err
    assert code == 2 and "SASL_USERNAME" in err and len(err.strip().splitlines()) == 1


def test_faust_gets_sasl_credentials_over_tls() -> None:
    import faust
    from facescreen.bus.security import faust_credentials

    assert faust_credentials(KafkaSecurity()) is None
    sasl = faust_credentials(KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "matcher", "pw"))
    assert isinstance(sasl, faust.SASLCredentials) and sasl.username == "matcher"
    assert str(sasl.protocol).endswith("SASL_SSL") and sasl.ssl_context is not None
    tls = faust_credentials(KafkaSecurity("SSL"))
    assert isinstance(tls, faust.SSLCredentials)
