"""Every `FACESCREEN_*` environment variable the services read, in one typed model.

Read once per use with `environment()`; `facescreen` checks it before parsing the command
line, so a bad variable is one line naming it (`FACESCREEN_REDIS_INDEX: should be 'FLAT' or
'HNSW', got 'IVF'`), exit 2, whatever the command. An empty variable counts as unset.
Passwords and database URLs are `SecretStr`: never in a repr, a log line or an error.

    FACESCREEN_BOOTSTRAP                 Kafka bootstrap servers, HOST[:PORT][,HOST[:PORT]...]
    FACESCREEN_TOPIC_PREFIX              prefix of every topic and consumer group name
    FACESCREEN_ALERTS_DB                 the alert store's URL (postgresql://... | sqlite:///...)
    FACESCREEN_REDIS_INDEX               FLAT (default) | HNSW
    FACESCREEN_ACTOR                     who is recorded in the audit log (default: the login)
    FACESCREEN_CACHE                     folder of downloaded model archives
    FACESCREEN_TANSU, FACESCREEN_TRITON_VENV   development servers (devstack)
    FACESCREEN_KAFKA_SECURITY_PROTOCOL   PLAINTEXT (default) | SSL | SASL_PLAINTEXT | SASL_SSL
    FACESCREEN_KAFKA_SASL_MECHANISM      SCRAM-SHA-512 (default with SASL) | SCRAM-SHA-256 | PLAIN
    FACESCREEN_KAFKA_SASL_USERNAME       the KafkaUser
    FACESCREEN_KAFKA_SASL_PASSWORD       its password (a Secret)
    FACESCREEN_KAFKA_SSL_CAFILE          the cluster CA certificate (PEM) to verify the brokers

Other `FACESCREEN_*` names are left alone (deployments define their own, e.g. the variables
a cameras file's `uri_env` names); an unknown `FACESCREEN_KAFKA_*` one is a typo and refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from facescreen.config.validation import one_line

PREFIX = "FACESCREEN_"
KAFKA = "FACESCREEN_KAFKA_"
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
DEFAULT_MECHANISM = "SCRAM-SHA-512"
TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]*$")  # what Kafka allows in a topic name
_SERVER = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:([0-9]{1,5}))?$")
SECRET_FIELDS = ("FACESCREEN_ALERTS_DB", f"{KAFKA}SASL_PASSWORD", f"{KAFKA}SASL_USERNAME")


class EnvironmentConfigError(ValueError):
    """An environment variable cannot be used; the message names the variable."""


def bootstrap_servers(text: str) -> list[str]:
    """`HOST[:PORT][,HOST[:PORT]...]` as a list; ValueError naming the bad server."""
    servers = [s.strip() for s in text.split(",") if s.strip()]
    if not servers:
        raise ValueError("no bootstrap server given (HOST:PORT[,HOST:PORT...])")
    for server in servers:
        match = _SERVER.match(server)
        if match is None or (match.group(3) is not None and not 0 < int(match.group(3)) < 65536):
            raise ValueError(f"bootstrap server {server!r} is not HOST:PORT (port 1..65535)")
    return servers


def _bootstrap(text: str) -> str:
    bootstrap_servers(text)
    return text


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _topic_prefix(text: str) -> str:
    if not TOPIC_CHARS.match(text) or len(text) > 200:
        raise ValueError("a topic prefix may hold only letters, digits, '.', '_' and '-' "
                         "(at most 200)")
    return text


def _actor(text: str) -> str:
    if not text.strip() or len(text) > 128 or not text.isprintable():
        raise ValueError("must be 1-128 printable characters")
    return text.strip()


def kafka_consistency(protocol: str, mechanism: str | None, username: bool,
                      password: bool) -> None:
    """ValueError (naming the variables) when the Kafka security settings contradict."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"{KAFKA}SECURITY_PROTOCOL: should be one of {', '.join(PROTOCOLS)}, "
                         f"got {protocol!r}")
    if protocol.startswith("SASL_"):
        if mechanism not in MECHANISMS:
            raise ValueError(f"{KAFKA}SASL_MECHANISM: should be one of {', '.join(MECHANISMS)}, "
                             f"got {mechanism!r}")
        if not username or not password:
            raise ValueError(f"{KAFKA}SECURITY_PROTOCOL: {protocol} needs {KAFKA}SASL_USERNAME "
                             f"and {KAFKA}SASL_PASSWORD")
        if mechanism == "PLAIN" and protocol != "SASL_SSL":
            raise ValueError(f"{KAFKA}SASL_MECHANISM: PLAIN sends the password in clear: "
                             "use SASL_SSL")
    elif username or password or mechanism:
        raise ValueError(f"{KAFKA}SECURITY_PROTOCOL: SASL settings given but the protocol is "
                         f"{protocol}: they would be ignored")


Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


class Environment(BaseModel):
    """The variables, by their names (aliases); unset ones hold their defaults."""

    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)

    bootstrap: Annotated[str, AfterValidator(_bootstrap)] | None = Field(
        None, alias="FACESCREEN_BOOTSTRAP")
    topic_prefix: Annotated[str, AfterValidator(_topic_prefix)] = Field(
        "", alias="FACESCREEN_TOPIC_PREFIX")
    alerts_db: SecretStr | None = Field(None, alias="FACESCREEN_ALERTS_DB")  # the store checks it
    redis_index: Annotated[Literal["FLAT", "HNSW"], BeforeValidator(_upper)] = Field(
        "FLAT", alias="FACESCREEN_REDIS_INDEX")
    actor: Annotated[str, AfterValidator(_actor)] | None = Field(None, alias="FACESCREEN_ACTOR")
    cache: Path | None = Field(None, alias="FACESCREEN_CACHE")
    tansu: Path | None = Field(None, alias="FACESCREEN_TANSU")
    triton_venv: Path | None = Field(None, alias="FACESCREEN_TRITON_VENV")
    kafka_protocol: Annotated[Protocol, BeforeValidator(_upper)] = Field(
        "PLAINTEXT", alias="FACESCREEN_KAFKA_SECURITY_PROTOCOL")
    kafka_mechanism: Annotated[Mechanism, BeforeValidator(_upper)] | None = Field(
        None, alias="FACESCREEN_KAFKA_SASL_MECHANISM")
    kafka_username: str | None = Field(None, alias="FACESCREEN_KAFKA_SASL_USERNAME")
    kafka_password: SecretStr | None = Field(None, alias="FACESCREEN_KAFKA_SASL_PASSWORD")
    kafka_cafile: Path | None = Field(None, alias="FACESCREEN_KAFKA_SSL_CAFILE")

    @model_validator(mode="before")
    @classmethod
    def _known_and_set(cls, data: Any) -> Any:
        """Empty means unset; an unknown FACESCREEN_KAFKA_* name is refused (a typo would
        silently drop a security setting); SASL defaults to SCRAM-SHA-512."""
        if not isinstance(data, Mapping):
            return data
        values = {k: v for k, v in data.items() if k.startswith(PREFIX) and v != ""}
        known = {f.alias for f in cls.model_fields.values()}
        unknown = sorted(k for k in values if k.startswith(KAFKA) and k not in known)
        if unknown:
            names = ", ".join(sorted(a for a in known if a and a.startswith(KAFKA)))
            raise ValueError(f"{unknown[0]}: unknown variable (known: {names})")
        protocol = _upper(values.get(f"{KAFKA}SECURITY_PROTOCOL", ""))
        if isinstance(protocol, str) and protocol.startswith("SASL_"):
            values.setdefault(f"{KAFKA}SASL_MECHANISM", DEFAULT_MECHANISM)
        return values

    @model_validator(mode="after")
    def _kafka_consistent(self) -> Environment:
        kafka_consistency(self.kafka_protocol, self.kafka_mechanism,
                          self.kafka_username is not None, self.kafka_password is not None)
        return self

    def __repr__(self) -> str:
        return "Environment(" + ", ".join(
            f"{n}={v!r}" for n, v in self if v is not None and n != "kafka_username") + ")"


def environment(environ: Mapping[str, str] | None = None) -> Environment:
    """The validated `FACESCREEN_*` variables of `environ` (default: this process's)."""
    env = os.environ if environ is None else environ
    try:
        return Environment.model_validate({k: v for k, v in env.items() if k.startswith(PREFIX)})
    except ValidationError as exc:
        raise EnvironmentConfigError(one_line(exc, None, Environment,
                                              hidden=SECRET_FIELDS)) from None
