"""What every consumer checks about the bus while it runs: topics, offsets, progress.

Three things a connected consumer can get wrong without any error reaching it:

* **Topics missing.** A broker that came back empty (tansu keeps nothing across a restart)
  or a topic deleted by mistake: the service is not ready (`topics` check) until every
  topic it uses exists with its configured partition count, with one log line each way.
* **Committed offset past the log's end.** When a log is recreated, a group's committed
  offset can lie beyond the new end; Apache Kafka answers such a fetch with
  OFFSET_OUT_OF_RANGE and the client resets, but tansu answers with nothing, so the
  consumer would wait there and silently skip everything written up to that offset.
  Detected by comparing the committed offset with the high watermark of the fetch
  responses (tansu's ListOffsets undercounts multi-record batches, fetches do not), then
  logged once, counted (`facescreen_offset_resets_total`) and reset by policy:
  `earliest` (default: the log's start, nothing new is skipped) or `latest`.
* **No progress.** A partition with messages waiting whose committed (or handled) offset
  has not moved for `stall_s` seconds: the `progress` check turns false (`Readiness`).

The settings come from the environment (below); the checks run every `check_s` seconds.

    FACESCREEN_BUS_CHECK_S     seconds between checks (default 5)
    FACESCREEN_STALL_S         no progress for this long with work waiting: not ready (60)
    FACESCREEN_OFFSET_RESET    earliest (default) | latest
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from facescreen.bus.topics import TopicSpec, bootstrap_list
from facescreen.config.environment import EnvironmentConfigError
from facescreen.ops.health import Readiness
from facescreen.ops.retry import describe

log = logging.getLogger("facescreen.bus.watch")
OFFSET_RESETS = Counter("facescreen_offset_resets",
                        "Committed offsets found past the log's end and reset by policy",
                        ["service", "topic", "partition", "policy"])
ENV = {"check_s": "FACESCREEN_BUS_CHECK_S", "stall_s": "FACESCREEN_STALL_S",
       "offset_reset": "FACESCREEN_OFFSET_RESET"}
Key = tuple[str, int]  # (topic, partition)


class WatchSettings(BaseModel):
    """How often the bus is checked, when no progress means not ready, the reset policy."""

    model_config = ConfigDict(frozen=True)

    check_s: float = Field(5.0, gt=0, le=3600)
    stall_s: float = Field(60.0, gt=0)
    offset_reset: Literal["earliest", "latest"] = "earliest"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WatchSettings:
        """The settings of FACESCREEN_BUS_CHECK_S / _STALL_S / _OFFSET_RESET (unset or empty:
        defaults); EnvironmentConfigError naming the variable otherwise (one line, exit 2)."""
        env = os.environ if environ is None else environ
        values = {field: env[name].strip().lower() for field, name in ENV.items()
                  if env.get(name, "").strip()}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ENV.get(str(first["loc"][0]) if first["loc"] else "", "environment")
            raise EnvironmentConfigError(f"{name}: {first['msg']}") from None


def out_of_range(committed: int | None, end: int | None) -> bool:
    """A committed offset beyond the log's end: the log was recreated (or truncated).
    Unknown values (nothing committed, nothing fetched yet) are not."""
    return committed is not None and end is not None and committed > end


def reset_target(policy: str, start: int, end: int) -> int:
    return start if policy == "earliest" else end


def record_reset(service: str, topic: str, partition: int, committed: int, end: int,
                 target: int, policy: str) -> None:
    """The one warning line and the metric of a reset."""
    OFFSET_RESETS.labels(service, topic, str(partition), policy).inc()
    log.warning("committed offset past the log's end, reset", extra={"fields": {
        "service": service, "topic": topic, "partition": partition, "committed": committed,
        "end": end, "reset_to": target, "policy": policy}})


def partition_key(key: Key) -> str:
    return f"{key[0]}:{key[1]}"


class ProgressTracker:
    """Turns (progress marker, log end) samples per partition into Readiness progress.

    The marker is the next offset still to be done (committed or handled); a partition
    whose marker is below its end has work waiting, and is stalled once its marker stays
    put for `Readiness.stall_s`.
    """

    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness
        self._last: dict[Key, int] = {}

    def update(self, key: Key, marker: int, end: int | None) -> None:
        name = partition_key(key)
        if end is None:  # nothing fetched yet: nothing known to wait
            return
        previous = self._last.get(key)
        self._last[key] = marker
        if marker >= end or (previous is not None and marker > previous):
            self.readiness.progressed(name)
        if marker < end:
            self.readiness.waiting(name)

    def retain(self, keys: Iterable[Key]) -> None:
        """Forget partitions no longer assigned."""
        keep = set(keys)
        for key in [k for k in self._last if k not in keep]:
            del self._last[key]
            self.readiness.forget(partition_key(key))


def partition_problems(specs: Iterable[TopicSpec], counts: Mapping[str, int]) -> list[str]:
    """What is wrong with the topics, given the partition counts that exist (empty: fine)."""
    problems = []
    for spec in specs:
        have = counts.get(spec.name)
        if have is None:
            problems.append(f"{spec.name} missing")
        elif have != spec.partitions:
            problems.append(f"{spec.name} has {have} partitions, configured {spec.partitions}")
    return problems


class BrokerView:
    """One admin connection, kept between checks: topics' partition counts and the
    group's committed offsets (cheap metadata requests). Blocking: run it in a thread."""

    def __init__(self, bootstrap: str | list[str], specs: Iterable[TopicSpec], service: str,
                 readiness: Readiness, timeout_s: float = 5.0) -> None:
        self.servers = bootstrap_list(bootstrap) if isinstance(bootstrap, str) else bootstrap
        self.specs = list(specs)
        self.service, self.readiness, self.timeout_s = service, readiness, timeout_s
        self._admin: Any = None
        self._problems: list[str] | None = None  # as last logged

    def close(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            with contextlib.suppress(Exception):  # a broken connection: nothing to do
                admin.close()

    def _client(self) -> Any:
        if self._admin is None:
            from kafka.admin import KafkaAdminClient

            from facescreen.bus.security import kafka_options

            self._admin = KafkaAdminClient(
                bootstrap_servers=self.servers, client_id=f"facescreen-{self.service}-watch",
                request_timeout_ms=int(self.timeout_s * 1000), **kafka_options())
        return self._admin

    def check_topics(self) -> list[str]:
        """Problems with the topics now ([] when all are there), reflected in the `topics`
        check; one log line whenever the answer changes."""
        try:
            admin = self._client()
            existing = set(admin.list_topics())
            wanted = [s.name for s in self.specs if s.name in existing]
            described = admin.describe_topics(wanted) if wanted else []
            counts = {t["name"]: len(t["partitions"]) for t in described
                      if t.get("error_code", 0) == 0}
            problems = partition_problems(self.specs, counts)
        except Exception as exc:  # broker away or refusing: the topics are not known good
            self.close()
            problems = [f"cannot list topics: {describe(exc)}"]
        self.readiness.mark("topics", not problems)
        if problems != self._problems:
            if problems:
                log.warning("topics not usable", extra={"fields": {
                    "service": self.service, "problems": problems}})
            elif self._problems is not None:
                log.info("topics present again", extra={"fields": {"service": self.service}})
            self._problems = problems
        return problems

    def committed(self, group: str) -> dict[Key, int]:
        """The group's committed offsets ({} when unknown: the broker did not answer)."""
        try:
            answer = self._client().list_group_offsets({group: None})
        except Exception as exc:
            log.debug("committed offsets unavailable: %s", type(exc).__name__)
            self.close()
            return {}
        return {(tp.topic, tp.partition): meta.offset
                for tp, meta in answer.get(group, {}).items()
                if meta is not None and meta.offset is not None and meta.offset >= 0}


def watch_topics(bootstrap: str | list[str], specs: Iterable[TopicSpec], service: str,
                 readiness: Readiness, settings: WatchSettings | None = None) -> threading.Event:
    """The `topics` check for a service without a consumer (ingest): a daemon thread checks
    every `check_s` until the returned event is set. Also applies `stall_s` to `readiness`."""
    settings = settings or WatchSettings.from_env()
    readiness.stall_s = settings.stall_s
    readiness.mark("topics", True)  # checked at start (require_topics)
    view = BrokerView(bootstrap, specs, service, readiness)
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(settings.check_s):
            view.check_topics()
        view.close()

    threading.Thread(target=run, name=f"{service}-topics", daemon=True).start()
    return stop
