"""Kafka client security (TLS, SASL/SCRAM) from the environment, for every client alike.

Production brokers (Strimzi's TLS listener with SCRAM-SHA-512, see `k8s/components/
kafka-scram`) need the same five settings in every process that talks to Kafka; they come
from the environment, never the command line (`ps` shows arguments), checked by the one
environment model (`facescreen.config.environment`), and the password is never logged or
shown in a repr:

    FACESCREEN_KAFKA_SECURITY_PROTOCOL   PLAINTEXT (default) | SSL | SASL_PLAINTEXT | SASL_SSL
    FACESCREEN_KAFKA_SASL_MECHANISM      SCRAM-SHA-512 (default with SASL) | SCRAM-SHA-256 | PLAIN
    FACESCREEN_KAFKA_SASL_USERNAME       the KafkaUser
    FACESCREEN_KAFKA_SASL_PASSWORD       its password (a Secret)
    FACESCREEN_KAFKA_SSL_CAFILE          the cluster CA certificate (PEM) to verify the brokers

`kafka_python_options()` feeds kafka-python's producers, consumers and admin client;
`aiokafka_options()` aiokafka's (and so Faust's and the matcher's table reader).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facescreen.config.environment import (
    KAFKA,
    MECHANISMS,
    PROTOCOLS,
    EnvironmentConfigError,
    environment,
    kafka_consistency,
)

PREFIX = KAFKA
__all__ = ["MECHANISMS", "PREFIX", "PROTOCOLS", "KafkaSecurity", "KafkaSecurityError"]


class KafkaSecurityError(ValueError):
    """The Kafka security settings are inconsistent; the message names the variable."""


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: Path | None = None

    def __post_init__(self) -> None:
        try:
            kafka_consistency(self.protocol, self.mechanism, bool(self.username),
                              bool(self.password))
        except ValueError as exc:
            raise KafkaSecurityError(str(exc)) from None
        if self.cafile is not None and not self.cafile.is_file():
            raise KafkaSecurityError(f"{PREFIX}SSL_CAFILE: {self.cafile} is not a file")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSecurity:
        """The settings of `environ` (default: this process's), through the one
        environment model (`facescreen.config.environment`)."""
        try:
            env = environment(environ)
        except EnvironmentConfigError as exc:
            raise KafkaSecurityError(str(exc)) from None
        password = env.kafka_password
        return cls(protocol=env.kafka_protocol, mechanism=env.kafka_mechanism,
                   username=env.kafka_username,
                   password=None if password is None else password.get_secret_value(),
                   cafile=env.kafka_cafile)

    def kafka_python_options(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's KafkaProducer/KafkaConsumer/KafkaAdminClient."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol.startswith("SASL_"):
            options.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                           sasl_plain_password=self.password)
        if self.tls:
            options["ssl_check_hostname"] = True
            if self.cafile is not None:
                options["ssl_cafile"] = str(self.cafile)
        return options

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying client TLS context (the cluster CA if given, else the system's)."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=str(self.cafile) if self.cafile else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def aiokafka_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's clients (the matcher's table reader, Faust's)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol.startswith("SASL_"):
            options.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                           sasl_plain_password=self.password)
        context = self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        return options


def faust_credentials(security: KafkaSecurity | None = None) -> Any:
    """Faust's `broker_credentials` for these settings (None: plaintext)."""
    import faust

    security = security or KafkaSecurity.from_env()
    if security.protocol.startswith("SASL_"):
        return faust.SASLCredentials(username=security.username, password=security.password,
                                     mechanism=security.mechanism,
                                     ssl_context=security.ssl_context())
    context = security.ssl_context()
    return None if context is None else faust.SSLCredentials(context)


def kafka_options() -> dict[str, Any]:
    """kafka-python options for this process's environment (raises KafkaSecurityError)."""
    return KafkaSecurity.from_env().kafka_python_options()
