"""The distributed watchlist store: Redis hashes and a RediSearch vector index.

Matching asks Redis on every search (KNN with a TAG pre-filter), with no local copy of the
templates, so every matcher process sees an enrolment or a deletion at once.

Keys, under `prefix` (ids and list names are percent-quoted inside keys, so `:` and glob
characters in them are harmless):
- `P:meta` HASH: format, embedder, dim. A store opened with another embedder/dim is refused.
- `P:watchlists` HASH: list name -> JSON (threshold, description, calibration).
- `P:subjects` SET of subject ids; `P:subject:<id>` STRING: JSON record (lists, expiry,
  per-image metadata). No biometric data.
- `P:emb:<id>` HASH: image id -> float32 little-endian embedding (biometric).
- `P:tpl:<id>:<list>` HASH: the subject template (`vec`, FLOAT32), `watchlist` (TAG),
  `subject`, `expires` (NUMERIC, `inf` when none). One per (subject, watchlist); indexed by
  `P:idx`, created on first use.
- `P:audit` STREAM: one entry per change, field `event` = JSON (who, when, action, reason,
  subject, watchlist); never an embedding. Not trimmed: a relay ships it to Kafka.

Expiry is enforced twice: every key of a subject gets a Redis TTL at its expiry, so the
data goes even if nobody purges, and every search pre-filters `@expires > now`, so an
expired subject stops matching at that instant whatever Redis' lazy expiry does.
`purge_expired` deletes what is left and writes the audit events.

Index kinds: FLAT (exact; the default) or HNSW (approximate) by configuration:
- `hnsw_m`: graph edges per node and layer (RediSearch default 16); more is better recall,
  more memory and a slower build;
- `hnsw_ef_construction`: candidate list while building (default 200);
- `hnsw_ef_runtime`: candidate list while searching, sent with every query so it can change
  without a rebuild. RediSearch's default is 10; 64 here: on bench/redis_knn.py's hard
  synthetic set (100k x 128-D) recall@1 was 0.877 at 10 and 1.000 at 64 (0.3 -> 0.6 ms).
  Larger galleries need more: see bench/gallery_scale.py (recall@1 against gallery size).
Each may also come from `FACESCREEN_REDIS_HNSW_M`, `..._EF_CONSTRUCTION`, `..._EF_RUNTIME`
(an argument wins); an existing graph keeps the M/EF_CONSTRUCTION it was built with (a
warning says so) until `FT.DROPINDEX` and a reopen rebuild it.
FLAT answers 100k templates in ~4 ms a probe on 2 cores and builds in seconds; HNSW answers
in <1 ms but took 60-80 s to build 100k here. Searches over all lists ask HNSW for
`HYBRID_POLICY BATCHES` (RediSearch's own choice with the expiry filter is a brute-force
scan, 8x slower at 10k); a watchlist subset leaves the choice to RediSearch.

Single Redis node (or primary/replica): a subject's keys change in one MULTI transaction,
which Redis Cluster would split across slots.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import numpy as np
import redis
from redis.client import Pipeline

from facescreen.core.matching import Candidate, subject_template
from facescreen.core.screening import SearchFn
from facescreen.core.types import FloatArray
from facescreen.watchlist.store import (
    EnrolledImage,
    Subject,
    SubjectExistsError,
    Watchlist,
    WatchlistError,
    check_embedding,
    check_name,
    check_watchlist_settings,
)

log = logging.getLogger("facescreen.watchlist.redis")

IndexKind = Literal["FLAT", "HNSW"]
TAG_SEPARATOR = "\x1f"  # one tag per template: a separator no list name may contain
THRESHOLD_REFRESH_S = 1.0
# The layout of the keys (the data directory's file format, store.FORMAT_VERSION, is another).
REDIS_FORMAT_VERSION = 1


def redacted_url(url: str) -> str:
    """The URL without user, password or query options: safe for logs and messages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<unparseable Redis URL>"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _get(mapping: Mapping[Any, Any], name: str, default: Any = None) -> Any:
    """A reply field, whether the client decodes keys (str) or not (bytes)."""
    if name.encode() in mapping:
        return mapping[name.encode()]
    return mapping.get(name, default)


def _escape_tag(value: str) -> str:
    """Backslash every character RediSearch's query syntax could read as an operator."""
    return "".join(ch if ch.isalnum() or ch == "_" else "\\" + ch for ch in value)


def _index_missing(exc: redis.ResponseError) -> bool:
    text = str(exc).lower()
    return "unknown index" in text or "no such index" in text


HNSW_DEFAULTS = {"M": 16, "EF_CONSTRUCTION": 200, "EF_RUNTIME": 64}
HNSW_LIMITS = {"M": 512, "EF_CONSTRUCTION": 4096, "EF_RUNTIME": 10_000}


def hnsw_setting(name: str, given: int | None) -> int:
    """An HNSW parameter: the one given, else `FACESCREEN_REDIS_HNSW_<NAME>`, else the
    default; so the CLI and the services take them from the environment like the kind."""
    variable = f"FACESCREEN_REDIS_HNSW_{name}"
    raw: object = given if given is not None else os.environ.get(variable, HNSW_DEFAULTS[name])
    try:
        value = int(str(raw))
    except ValueError:
        value = 0
    if not 1 <= value <= HNSW_LIMITS[name] or (name == "M" and value < 2):
        source = "" if given is not None else f" ({variable})"
        raise WatchlistError(f"HNSW {name}{source} {str(raw)[:20]!r} is not an integer in "
                             f"{2 if name == 'M' else 1}..{HNSW_LIMITS[name]}")
    return value


class _Thresholds(Mapping[str, float]):
    """Each watchlist's threshold, re-read from Redis at most once a second.

    Live rather than a snapshot, so a list created or recalibrated after the matcher was
    built is decided with its current threshold.
    """

    def __init__(self, load: Callable[[], dict[str, float]],
                 max_age_s: float | None = None) -> None:
        self._load = load
        self._max_age_s = THRESHOLD_REFRESH_S if max_age_s is None else max_age_s
        self._values: dict[str, float] = load()
        self._loaded = time.monotonic()

    def _current(self) -> dict[str, float]:
        if time.monotonic() - self._loaded > self._max_age_s:
            self._values = self._load()
            self._loaded = time.monotonic()
        return self._values

    def __getitem__(self, key: str) -> float:
        return self._current()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())


class RedisWatchlistStore:
    """Watchlists in Redis, matched by RediSearch KNN; one store per `prefix`.

    TLS and credentials come from the URL (`rediss://user:password@host:6380/0`); the URL
    is only ever shown without them (`redacted_url`).
    """

    def __init__(self, url: str, *, embedder: str, dim: int, index_kind: IndexKind = "FLAT",
                 prefix: str = "facescreen", hnsw_m: int | None = None,
                 hnsw_ef_construction: int | None = None, hnsw_ef_runtime: int | None = None,
                 query_timeout_ms: int | None = None,
                 connect_timeout_s: float = 5.0, socket_timeout_s: float = 30.0) -> None:
        kind = index_kind.upper()
        if kind not in ("FLAT", "HNSW"):
            raise WatchlistError(f"index kind {index_kind!r} is neither FLAT nor HNSW")
        if dim <= 0:
            raise WatchlistError(f"dimension {dim} is not positive")
        self.url = redacted_url(url)
        self.embedder = embedder
        self.dim = dim
        self.index_kind: IndexKind = "HNSW" if kind == "HNSW" else "FLAT"
        self.prefix = prefix
        self.hnsw_m = hnsw_setting("M", hnsw_m)
        self.hnsw_ef_construction = hnsw_setting("EF_CONSTRUCTION", hnsw_ef_construction)
        self.hnsw_ef_runtime = hnsw_setting("EF_RUNTIME", hnsw_ef_runtime)
        self.query_timeout_ms = query_timeout_ms
        self.index_name = f"{prefix}:idx"
        try:
            # URL options (?socket_timeout=...) override these defaults.
            self._r = redis.Redis.from_url(url, socket_connect_timeout=connect_timeout_s,
                                           socket_timeout=socket_timeout_s)
        except ValueError as exc:
            raise WatchlistError(f"{self.url} is not a usable Redis URL: "
                                 f"{str(exc).replace(url, self.url)}") from None
        self._ready = False

    def __repr__(self) -> str:
        return (f"RedisWatchlistStore({self.url!r}, prefix={self.prefix!r}, "
                f"index={self.index_kind}, embedder={self.embedder!r}, dim={self.dim})")

    def close(self) -> None:
        self._r.close()

    def __enter__(self) -> RedisWatchlistStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- keys ------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return ":".join([self.prefix, *parts])

    def _subject_key(self, sid: str) -> str:
        return self._key("subject", quote(sid, safe=""))

    def _emb_key(self, sid: str) -> str:
        return self._key("emb", quote(sid, safe=""))

    def _tpl_key(self, sid: str, watchlist: str) -> str:
        return self._key("tpl", quote(sid, safe=""), quote(watchlist, safe=""))

    # -- errors and set-up -----------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn redis-py exceptions into one-line `WatchlistError`s without credentials."""
        try:
            yield
        except redis.AuthenticationError as exc:
            raise WatchlistError(f"Redis at {self.url} refused the credentials: {exc}") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise WatchlistError(f"Redis at {self.url} is unreachable: {exc}") from None
        except redis.ResponseError as exc:
            if "unknown command" in str(exc).lower() and "FT." in str(exc).upper():
                raise WatchlistError(f"Redis at {self.url} has no vector search "
                                     f"(RediSearch module): {exc}") from None
            raise WatchlistError(f"Redis at {self.url}: {exc}") from None
        except redis.RedisError as exc:
            raise WatchlistError(f"Redis at {self.url}: {exc}") from None

    def _prepare(self, *, create: bool) -> None:
        """Check the stored embedder/dim and make sure the vector index exists (once)."""
        if self._ready:
            return
        meta_key = self._key("meta")
        with self._errors():
            meta = {_text(k): _text(v) for k, v in self._r.hgetall(meta_key).items()}
            if not meta and create:
                self._r.hsetnx(meta_key, "format", REDIS_FORMAT_VERSION)
                self._r.hsetnx(meta_key, "embedder", self.embedder)
                self._r.hsetnx(meta_key, "dim", self.dim)
                meta = {_text(k): _text(v) for k, v in self._r.hgetall(meta_key).items()}
            if not meta:
                return  # nothing stored yet: nothing to check, no index needed to read
            if meta.get("embedder") != self.embedder or meta.get("dim") != str(self.dim):
                raise WatchlistError(
                    f"watchlist {self.prefix!r} at {self.url} was enrolled with embedder "
                    f"{meta.get('embedder')!r} (dim {meta.get('dim')}), not {self.embedder!r} "
                    f"(dim {self.dim}): re-enrol or use another prefix")
            if meta.get("format") != str(REDIS_FORMAT_VERSION):
                raise WatchlistError(f"watchlist {self.prefix!r} at {self.url} has "
                                     f"unsupported format {meta.get('format')!r}")
            self._ensure_index()
        self._ready = True

    def _ensure_index(self) -> None:
        try:
            info = self._r.execute_command("FT.INFO", self.index_name)
        except redis.ResponseError as exc:
            if not _index_missing(exc):
                raise
            self._create_index()
            return
        vector = _vector_attribute(info)
        algorithm = _text(vector.get("algorithm", "")).upper()
        dim = int(_text(vector.get("dim", 0)))
        if dim != self.dim:
            raise WatchlistError(f"index {self.index_name} at {self.url} holds dim {dim}, "
                                 f"not {self.dim}")
        built = {"M": self.hnsw_m, "ef_construction": self.hnsw_ef_construction}
        differs = {key: _text(vector[key]) for key, want in built.items()
                   if algorithm == "HNSW" == self.index_kind and key in vector
                   and _text(vector[key]) != str(want)}
        if differs:  # a graph is built once: new settings need FT.DROPINDEX and a reopen
            log.warning("HNSW index was built with other settings; those stay until it is "
                        "rebuilt", extra={"fields": {"index": self.index_name, "built": differs,
                                                     "configured": built}})
        if algorithm != self.index_kind:
            raise WatchlistError(
                f"index {self.index_name} at {self.url} is {algorithm}, this store is "
                f"configured {self.index_kind}: configure {algorithm}, or rebuild it with "
                f"FT.DROPINDEX {self.index_name} (templates are kept) and reopen")

    def _create_index(self) -> None:
        params: list[Any] = ["TYPE", "FLOAT32", "DIM", self.dim, "DISTANCE_METRIC", "COSINE"]
        if self.index_kind == "HNSW":
            params += ["M", self.hnsw_m, "EF_CONSTRUCTION", self.hnsw_ef_construction,
                       "EF_RUNTIME", self.hnsw_ef_runtime]
        try:
            self._r.execute_command(
                "FT.CREATE", self.index_name, "ON", "HASH", "PREFIX", 1, self._key("tpl", ""),
                "SCHEMA",
                "watchlist", "TAG", "SEPARATOR", TAG_SEPARATOR, "CASESENSITIVE",
                "expires", "NUMERIC",
                "vec", "VECTOR", self.index_kind, len(params), *params)
        except redis.ResponseError as exc:
            if "already exists" not in str(exc).lower():  # another process was first
                raise

    # -- reading ---------------------------------------------------------------------------
    def watchlists(self) -> dict[str, Watchlist]:
        self._prepare(create=False)
        with self._errors():
            raw = self._r.hgetall(self._key("watchlists"))
        lists = {_text(k): Watchlist(**json.loads(v)) for k, v in raw.items()}
        return dict(sorted(lists.items()))

    def _thresholds(self) -> dict[str, float]:
        return {name: wl.threshold for name, wl in self.watchlists().items()}

    def subjects(self) -> dict[str, Subject]:
        self._prepare(create=False)
        with self._errors():
            ids = sorted(_text(s) for s in self._r.smembers(self._key("subjects")))
            pipe = self._r.pipeline(transaction=False)
            for sid in ids:
                pipe.get(self._subject_key(sid))
            records = pipe.execute()
        found = [_subject(r) for r in records if r is not None]  # TTL may have taken some
        return {s.subject_id: s for s in sorted(found, key=lambda s: (s.created, s.subject_id))}

    def audit_log(self) -> list[dict[str, Any]]:
        """Every audit event, oldest first, each with its stream entry `id`."""
        with self._errors():
            entries: list[tuple[Any, dict[Any, Any]]] = self._r.xrange(  # type: ignore[assignment]
                self._key("audit"))
        log = []
        for entry_id, fields in entries:
            event = json.loads(_get(fields, "event"))
            event["id"] = _text(entry_id)
            log.append(event)
        return log

    def audit_cursor(self) -> str | None:
        """Id of the last audit entry relayed to the audit topic (None: nothing yet)."""
        with self._errors():
            value = self._r.get(self._key("audit", "relayed"))
        return None if value is None else _text(value)

    def set_audit_cursor(self, entry_id: str) -> None:
        with self._errors():
            self._r.set(self._key("audit", "relayed"), entry_id)

    def matcher(self, watchlists: Sequence[str] | None = None, *,
                now: float | None = None) -> tuple[SearchFn, Mapping[str, float]]:
        """KNN in Redis on every call, pre-filtered by watchlist tag and expiry.

        Thresholds are live: re-read from Redis at most once a second.
        """
        self._prepare(create=True)
        chosen = None if watchlists is None else list(watchlists)

        def search(probes: FloatArray, k: int) -> list[list[Candidate]]:
            return self.search(probes, k, chosen, now=now)

        with self._errors():
            thresholds = _Thresholds(self._thresholds)
        return search, thresholds

    def search(self, probes: FloatArray, k: int = 5, watchlists: Sequence[str] | None = None,
               *, now: float | None = None) -> list[list[Candidate]]:
        """Top-k live templates per probe row, best first (one pipelined round trip)."""
        probes = np.asarray(probes, np.float32)
        if probes.ndim != 2 or probes.shape[1] != self.dim:
            raise WatchlistError(f"probes of shape {probes.shape}, expected (n, {self.dim})")
        if k <= 0 or len(probes) == 0 or (watchlists is not None and not list(watchlists)):
            return [[] for _ in range(len(probes))]
        self._prepare(create=True)
        clock = time.time() if now is None else now
        where = f"@expires:[({clock!r} +inf]"
        if watchlists is not None:
            where += " @watchlist:{" + " | ".join(_escape_tag(w) for w in watchlists) + "}"
        knn = f"KNN {k} @vec $B"
        if self.index_kind == "HNSW":
            knn += f" EF_RUNTIME {self.hnsw_ef_runtime}"
            if watchlists is None:
                # The expiry filter passes nearly every template: walk the graph and filter
                # (RediSearch's own choice here is a brute-force scan, 8x slower at 10k).
                knn += " HYBRID_POLICY BATCHES"
        query = f"({where})=>[{knn} AS dist]"
        options: list[Any] = ["RETURN", 3, "subject", "watchlist", "dist",
                              "SORTBY", "dist", "ASC", "LIMIT", 0, k, "DIALECT", 2]
        if self.query_timeout_ms is not None:
            options += ["TIMEOUT", self.query_timeout_ms]
        commands = [("FT.SEARCH", self.index_name, query, "PARAMS", 2,
                     "B", row.astype("<f4").tobytes(), *options) for row in probes]
        with self._errors():
            try:
                replies = self._execute(commands)
            except redis.ResponseError as exc:
                if not _index_missing(exc):
                    raise
                # The server lost its index (restarted without it, or FT.DROPINDEX): build
                # it again over the stored subject hashes, then ask once more.
                log.warning("vector index missing, re-creating it",
                            extra={"fields": {"index": self.index_name}})
                self._ready = False
                self._prepare(create=True)
                replies = self._execute(commands)
        return [self._candidates(reply) for reply in replies]

    def _execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if len(commands) == 1:  # the common case: one face, one round trip, no pipeline
            return [self._r.execute_command(*commands[0])]
        pipe = self._r.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute())

    def _candidates(self, reply: Any) -> list[Candidate]:
        if isinstance(reply, dict):  # RESP3
            warnings = [_text(w) for w in _get(reply, "warning", [])]
            if warnings:  # e.g. a timeout with ON_TIMEOUT RETURN: the answer may be short
                raise WatchlistError(f"Redis at {self.url}: search incomplete: "
                                     f"{'; '.join(warnings)}")
            rows = [_get(r, "extra_attributes", {}) for r in _get(reply, "results", [])]
            docs = [{_text(k): _text(v) for k, v in row.items()} for row in rows]
        else:  # RESP2: [total, id, [field, value, ...], id, [...], ...]
            docs = [{_text(k): _text(v) for k, v in zip(f[::2], f[1::2], strict=True)}
                    for f in reply[2::2]]
        return [Candidate(d["subject"], d["watchlist"], 1.0 - float(d["dist"])) for d in docs]

    # -- writing ---------------------------------------------------------------------------
    def _audit(self, pipe: Pipeline, actor: str, action: str, reason: str, *,
               subject: str | None = None, watchlist: str | None = None,
               **details: Any) -> None:
        """Queue one audit event; every event names its subject and list (or null)."""
        event = {"time": time.time(), "actor": actor, "action": action, "reason": reason,
                 "subject": subject, "watchlist": watchlist, **details}
        pipe.xadd(self._key("audit"), {"event": json.dumps(event, sort_keys=True)})

    def record(self, *, actor: str, action: str, reason: str = "", **details: Any) -> None:
        """Audit an action that changes no watchlist (a search, a reviewer's verdict)."""
        def write(pipe: Pipeline) -> None:
            pipe.multi()
            self._audit(pipe, actor, action, reason, **details)

        self._transaction(write)

    def _transaction(self, func: Callable[[Pipeline], Any], *watch: str) -> Any:
        """Run `func` under WATCH/MULTI, retried if a watched key changes meanwhile."""
        with self._errors():
            return self._r.transaction(func, *watch, value_from_callable=True)

    def set_watchlist(self, name: str, *, actor: str, reason: str = "",
                      threshold: float | None = None, description: str | None = None,
                      calibration: dict[str, Any] | None = None,
                      target_fpir: float | None = None, priority: int | None = None,
                      route: str | None = None) -> Watchlist:
        """Create a watchlist or change its threshold/description."""
        check_name(name, "watchlist")
        check_watchlist_settings(threshold, target_fpir, priority, route)
        self._prepare(create=True)
        key = self._key("watchlists")

        def change(pipe: Pipeline) -> Watchlist:
            raw = pipe.hget(key, name)
            wl = Watchlist(**json.loads(raw)) if raw else Watchlist(name)
            wl.update(threshold, description, calibration, target_fpir=target_fpir,
                      priority=priority, route=route)
            pipe.multi()
            pipe.hset(key, name, json.dumps(asdict(wl)))
            self._audit(pipe, actor, "set_watchlist", reason, watchlist=name,
                        threshold=threshold, target_fpir=target_fpir, priority=priority,
                        route=route)
            return wl

        result: Watchlist = self._transaction(change, key)
        return result

    def delete_watchlist(self, name: str, *, actor: str, reason: str = "") -> None:
        """Delete an empty watchlist (one with members is refused: remove them first)."""
        self._prepare(create=False)
        key = self._key("watchlists")
        members = [s for s in self.subjects().values() if name in s.watchlists]

        def change(pipe: Pipeline) -> None:
            if not pipe.hexists(key, name):
                raise WatchlistError(f"unknown watchlist {name!r}")
            if members:
                raise WatchlistError(f"watchlist {name!r} has {len(members)} subject(s): "
                                     "remove them first")
            pipe.multi()
            pipe.hdel(key, name)
            self._audit(pipe, actor, "delete_watchlist", reason, watchlist=name)

        self._transaction(change, key)

    def add_subject(self, subject_id: str, watchlist: str,
                    embeddings: list[tuple[str, float, FloatArray]], *, actor: str,
                    reason: str = "", expires: float | None = None,
                    new: bool = False) -> Subject:
        """Enrol images (label, quality, embedding); rewrites the subject's templates.
        `new=True` refuses an existing subject inside the WATCH transaction."""
        check_name(subject_id, "subject")
        check_name(watchlist, "watchlist")
        if not embeddings:
            raise WatchlistError(f"no usable image for subject {subject_id!r}")
        for _, _, vector in embeddings:
            check_embedding(vector, self.dim)
        if expires is not None and not time.time() < expires < float("inf"):
            raise WatchlistError("the expiry must lie in the future")
        self._prepare(create=True)
        subject_key, emb_key = self._subject_key(subject_id), self._emb_key(subject_id)
        lists_key = self._key("watchlists")

        def change(pipe: Pipeline) -> Subject:
            raw = pipe.get(subject_key)
            if new and raw is not None:
                raise SubjectExistsError(f"subject {subject_id!r} is already enrolled")
            now = time.time()
            subject = _subject(raw) if raw is not None else Subject(subject_id, [], now)
            raw_embeddings: dict[bytes, bytes] = pipe.hgetall(emb_key)  # type: ignore[assignment]
            stored = {_text(k): np.frombuffer(v, "<f4") for k, v in raw_embeddings.items()}
            if watchlist not in subject.watchlists:
                subject.watchlists.append(watchlist)
            if expires is not None:
                subject.expires = expires
            added: dict[str, bytes] = {}
            for label, quality, vector in embeddings:
                image_id = uuid.uuid4().hex
                added[image_id] = np.asarray(vector, "<f4").tobytes()
                subject.images.append(EnrolledImage(image_id, label, float(quality), now))
            stored.update({i: np.frombuffer(v, "<f4") for i, v in added.items()})
            missing = [i.image_id for i in subject.images if i.image_id not in stored]
            if missing:
                raise WatchlistError(f"subject {subject_id!r} at {self.url} is corrupt: "
                                     f"{len(missing)} enrolled image(s) have no embedding")
            vectors = [stored[i.image_id] for i in subject.images]
            template = subject_template(np.stack(vectors).astype(np.float32))
            pipe.multi()
            pipe.hsetnx(lists_key, watchlist, json.dumps(asdict(Watchlist(watchlist))))
            pipe.sadd(self._key("subjects"), subject_id)
            pipe.set(subject_key, json.dumps(asdict(subject)))
            pipe.hset(emb_key, mapping=added)  # type: ignore[arg-type]
            self._write_templates(pipe, subject, template, subject.watchlists)
            self._audit(pipe, actor, "add_subject", reason, subject=subject_id,
                        watchlist=watchlist, images=len(embeddings))
            return subject

        result: Subject = self._transaction(change, subject_key, emb_key)
        return result

    def _write_templates(self, pipe: Pipeline, subject: Subject, template: FloatArray,
                         lists: Sequence[str]) -> None:
        """Queue the subject's template on `lists` (inside a MULTI), and the subject's
        expiry on its keys again (SET and HSET leave a key without its TTL)."""
        sid = subject.subject_id
        keys = [self._subject_key(sid), self._emb_key(sid)]
        for name in lists:
            tpl_key = self._tpl_key(sid, name)
            pipe.hset(tpl_key, mapping={
                "vec": template.astype("<f4").tobytes(), "watchlist": name, "subject": sid,
                "expires": "inf" if subject.expires is None else repr(subject.expires)})
            keys.append(tpl_key)
        if subject.expires is not None:
            for key in keys:
                pipe.pexpireat(key, math.ceil(subject.expires * 1000))

    def add_membership(self, subject_id: str, watchlist: str, *, actor: str,
                       reason: str = "") -> Subject:
        """Put an enrolled subject on another watchlist with the images it has."""
        check_name(watchlist, "watchlist")
        self._prepare(create=True)
        subject_key, emb_key = self._subject_key(subject_id), self._emb_key(subject_id)

        def change(pipe: Pipeline) -> Subject:
            subject = _existing_subject(pipe, subject_key, subject_id)
            raw_embeddings: dict[bytes, bytes] = pipe.hgetall(emb_key)  # type: ignore[assignment]
            stored = {_text(k): np.frombuffer(v, "<f4") for k, v in raw_embeddings.items()}
            if any(i.image_id not in stored for i in subject.images) or not subject.images:
                raise WatchlistError(f"subject {subject_id!r} at {self.url} is corrupt: "
                                     "an enrolled image has no embedding")
            template = subject_template(np.stack([stored[i.image_id]
                                                  for i in subject.images]).astype(np.float32))
            if watchlist not in subject.watchlists:
                subject.watchlists.append(watchlist)
            pipe.multi()
            pipe.hsetnx(self._key("watchlists"), watchlist,
                        json.dumps(asdict(Watchlist(watchlist))))
            pipe.set(subject_key, json.dumps(asdict(subject)))
            self._write_templates(pipe, subject, template, [watchlist])
            self._audit(pipe, actor, "add_membership", reason, subject=subject_id,
                        watchlist=watchlist)
            return subject

        result: Subject = self._transaction(change, subject_key, emb_key)
        return result

    def _delete_subject(self, pipe: Pipeline, subject_id: str, lists: Sequence[str]) -> None:
        """Queue the deletion of every key of a subject (inside a MULTI)."""
        keys = [self._subject_key(subject_id), self._emb_key(subject_id)]
        keys += [self._tpl_key(subject_id, name) for name in lists]
        pipe.delete(*keys)
        pipe.srem(self._key("subjects"), subject_id)

    def remove_subject(self, subject_id: str, *, actor: str, reason: str = "",
                       watchlist: str | None = None) -> None:
        """Take a subject off one watchlist, or delete it with every embedding it has."""
        self._prepare(create=False)
        subject_key = self._subject_key(subject_id)

        def change(pipe: Pipeline) -> None:
            subject = _existing_subject(pipe, subject_key, subject_id)
            if watchlist is not None and watchlist not in subject.watchlists:
                raise WatchlistError(f"subject {subject_id!r} is not on {watchlist!r}")
            lists = list(subject.watchlists)
            pipe.multi()
            if watchlist is not None and len(lists) > 1:
                subject.watchlists.remove(watchlist)
                pipe.delete(self._tpl_key(subject_id, watchlist))
                pipe.set(subject_key, json.dumps(asdict(subject)), keepttl=True)
            else:
                self._delete_subject(pipe, subject_id, lists)
            self._audit(pipe, actor, "remove_subject", reason, subject=subject_id,
                        watchlist=watchlist)

        self._transaction(change, subject_key)

    def remove_image(self, subject_id: str, image_id: str, *, actor: str,
                     reason: str = "") -> Subject:
        """Delete one enrolled image and its embedding and rewrite the subject's templates;
        the last image is refused (delete the subject instead)."""
        self._prepare(create=False)
        subject_key, emb_key = self._subject_key(subject_id), self._emb_key(subject_id)

        def change(pipe: Pipeline) -> Subject:
            subject = _existing_subject(pipe, subject_key, subject_id)
            kept = [i for i in subject.images if i.image_id != image_id]
            if len(kept) == len(subject.images):
                raise WatchlistError(f"subject {subject_id!r} has no image {image_id[:40]!r}")
            if not kept:
                raise WatchlistError(f"image {image_id!r} is the last of subject "
                                     f"{subject_id!r}: delete the subject instead")
            raw_embeddings: dict[bytes, bytes] = pipe.hgetall(emb_key)  # type: ignore[assignment]
            stored = {_text(k): np.frombuffer(v, "<f4") for k, v in raw_embeddings.items()}
            if any(i.image_id not in stored for i in kept):
                raise WatchlistError(f"subject {subject_id!r} at {self.url} is corrupt: "
                                     "an enrolled image has no embedding")
            subject.images = kept
            template = subject_template(np.stack([stored[i.image_id] for i in kept]))
            pipe.multi()
            pipe.set(subject_key, json.dumps(asdict(subject)), keepttl=True)
            pipe.hdel(emb_key, image_id)
            for name in subject.watchlists:
                pipe.hset(self._tpl_key(subject_id, name), "vec",
                          template.astype("<f4").tobytes())
            self._audit(pipe, actor, "remove_image", reason, subject=subject_id,
                        image_id=image_id)
            return subject

        result: Subject = self._transaction(change, subject_key, emb_key)
        return result

    def purge_expired(self, *, actor: str, now: float | None = None) -> list[str]:
        """Delete subjects past expiry, including those Redis' TTL already took; audit each."""
        self._prepare(create=False)
        now = time.time() if now is None else now
        with self._errors():
            ids = sorted(_text(s) for s in self._r.smembers(self._key("subjects")))
        gone: list[str] = []
        for sid in ids:
            subject_key = self._subject_key(sid)

            def change(pipe: Pipeline, sid: str = sid, subject_key: str = subject_key) -> bool:
                raw = pipe.get(subject_key)
                if raw is not None:
                    subject = _subject(raw)
                    pipe.multi()
                    if not subject.expired(now):
                        return False
                    self._delete_subject(pipe, sid, subject.watchlists)
                else:  # the TTL took the record: delete whatever it has not taken yet
                    pattern = self._key("tpl", quote(sid, safe=""), "*")
                    left = [_text(k) for k in pipe.scan_iter(match=pattern, count=1000)]
                    pipe.multi()
                    pipe.delete(self._emb_key(sid), *left)
                    pipe.srem(self._key("subjects"), sid)
                self._audit(pipe, actor, "purge_expired", "expiry", subject=sid)
                return True

            if self._transaction(change, subject_key):
                gone.append(sid)
        return gone


def _existing_subject(pipe: Pipeline, key: str, subject_id: str) -> Subject:
    """The subject under `key` (read inside a WATCH), or the unknown-subject error."""
    raw = pipe.get(key)
    if raw is None:
        raise WatchlistError(f"unknown subject {subject_id!r}")
    return _subject(raw)


def _subject(raw: bytes | str) -> Subject:
    data = json.loads(raw)
    return Subject(**{**data, "images": [EnrolledImage(**i) for i in data["images"]]})


def _vector_attribute(info: Any) -> dict[str, Any]:
    """The VECTOR field of an FT.INFO reply (RESP3 map or RESP2 flat list)."""
    pairs = info if isinstance(info, dict) else dict(zip(info[::2], info[1::2], strict=False))
    attributes = _get(pairs, "attributes", [])
    for attribute in attributes:
        if not isinstance(attribute, dict):
            attribute = dict(zip(attribute[::2], attribute[1::2], strict=False))
        fields = {_text(k): v for k, v in attribute.items()}
        if _text(fields.get("type", "")) == "VECTOR":
            return fields
    return {}
