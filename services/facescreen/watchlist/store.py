"""The embedded watchlist store: subjects, their templates and watchlists in a data directory.

Layout (all written atomically, under an exclusive lock):
- `watchlist.json`: watchlists (threshold, calibration) and subjects (membership, expiry,
  per-image metadata). No biometric data.
- `embeddings.npz`: one L2-normalised embedding per enrolled image: `image_ids` (n,) and
  `vectors` (n, dim) float32, row i the embedding of image i (format 2; format 1 kept one
  archive member per image, which took minutes to read at a million images, and is still
  read). Biometric: created with mode 0600 and never logged.
- `audit.jsonl`: one line per change: who, when, what, why.
Deleting a subject removes its every embedding; nothing else holds one.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import time
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facescreen.core.alignment import l2_normalise
from facescreen.core.calibration import DEFAULT_MAX_GROWTH, is_stale
from facescreen.core.matching import Candidate, GalleryIndex, TemplateIndex
from facescreen.core.screening import SearchFn
from facescreen.core.specs import GallerySpec
from facescreen.core.types import FloatArray
from facescreen.watchlist.ivf_index import build_index

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # 1: one npz member per image (read, rewritten as 2 on a change)
DEFAULT_THRESHOLD = 0.95  # cosine; calibrated on celeba-dev to FPIR ~0.01, see README


class WatchlistError(RuntimeError):
    """A watchlist operation cannot be done; the message says why."""


class SubjectExistsError(WatchlistError):
    """A new subject's id is taken (`add_subject(..., new=True)`)."""


@dataclass
class EnrolledImage:
    image_id: str
    label: str  # file name given at enrolment; the image itself is not kept
    quality: float
    added: float


@dataclass
class Subject:
    subject_id: str
    watchlists: list[str]
    created: float
    expires: float | None = None
    images: list[EnrolledImage] = field(default_factory=list)

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires


@dataclass
class Watchlist:
    name: str
    threshold: float = DEFAULT_THRESHOLD
    description: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)
    target_fpir: float | None = None  # the FPIR the operator wants its threshold to give
    priority: int = 0  # 0..100, higher is more urgent (dashboard order, routing)
    route: str = ""  # name of the alert route (webhook) its alerts go to; "" for none

    def update(self, threshold: float | None, description: str | None,
               calibration: dict[str, Any] | None, *, target_fpir: float | None = None,
               priority: int | None = None, route: str | None = None) -> None:
        """Change what is given, keep the rest."""
        if threshold is not None:
            self.threshold = float(threshold)
        if description is not None:
            self.description = description
        if calibration is not None:
            self.calibration = calibration
        if target_fpir is not None:
            self.target_fpir = float(target_fpir)
        if priority is not None:
            self.priority = int(priority)
        if route is not None:
            self.route = route


def check_watchlist_settings(threshold: float | None = None, target_fpir: float | None = None,
                             priority: int | None = None, route: str | None = None) -> None:
    """One check of a list's settings for both stores (a bad value is refused, not clamped)."""
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise WatchlistError(f"threshold {threshold} is not a cosine similarity in [-1, 1]")
    if target_fpir is not None and not 0.0 < target_fpir < 1.0:
        raise WatchlistError(f"target FPIR {target_fpir} is not a rate in (0, 1)")
    if priority is not None and not 0 <= priority <= 100:
        raise WatchlistError(f"priority {priority} is not in 0..100")
    if route:
        check_name(route, "route")


def gallery_size(subjects: dict[str, Subject], watchlist: str, now: float | None = None) -> int:
    """Templates a search of `watchlist` compares with: its live subjects with an image."""
    now = time.time() if now is None else now
    return sum(1 for s in subjects.values()
               if watchlist in s.watchlists and s.images and not s.expired(now))


def calibration_stale(watchlist: Watchlist, gallery_size: int) -> bool:
    """Whether the list's calibration no longer holds: its gallery grew by more than the
    share recorded at calibration (default 20%) since. False for an uncalibrated list.

    The matcher can call this to log a warning; `watchlist list` marks the list STALE.
    """
    record = watchlist.calibration
    calibrated = record.get("gallery_size", record.get("subjects"))
    if not record or calibrated is None:
        return False
    return is_stale(int(calibrated), gallery_size,
                    float(record.get("max_growth", DEFAULT_MAX_GROWTH)))


def stale_calibrations(watchlists: dict[str, Watchlist], subjects: dict[str, Subject],
                       now: float | None = None) -> list[str]:
    """The lists whose calibrated threshold no longer holds for their gallery size."""
    return sorted(name for name, wl in watchlists.items()
                  if calibration_stale(wl, gallery_size(subjects, name, now)))


@dataclass(frozen=True)
class Snapshot:
    """What a reader of the data directory needs, from one read of its files."""

    index: TemplateIndex
    thresholds: dict[str, float]
    subjects: dict[str, Subject]
    watchlists: dict[str, Watchlist]


@dataclass
class _State:
    embedder: str
    dim: int
    watchlists: dict[str, Watchlist] = field(default_factory=dict)
    subjects: dict[str, Subject] = field(default_factory=dict)
    embeddings: dict[str, FloatArray] = field(default_factory=dict)


def _read_embeddings(npz: Any, fmt: int) -> dict[str, FloatArray]:
    """Image id -> embedding from an open `embeddings.npz` of format `fmt`."""
    if fmt == 1:
        return {k: np.asarray(npz[k], np.float32) for k in npz.files}
    ids, vectors = npz["image_ids"], np.asarray(npz["vectors"], np.float32)
    if ids.ndim != 1 or vectors.ndim != 2 or len(ids) != len(vectors):
        raise ValueError(f"image_ids {ids.shape} and vectors {vectors.shape} do not pair up")
    return dict(zip(ids.tolist(), vectors, strict=True))


class LocalWatchlistStore:
    """Exact, file-backed watchlist for the embedded mode (a few thousand subjects)."""

    def __init__(self, data_dir: Path, *, embedder: str, dim: int,
                 gallery: GallerySpec | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.embedder = embedder
        self.dim = dim
        self.gallery = gallery or GallerySpec()  # how snapshots index the templates

    # -- reading ---------------------------------------------------------------------------
    def _meta_path(self) -> Path:
        return self.data_dir / "watchlist.json"

    def _load(self) -> _State:
        meta_path = self._meta_path()
        state = _State(embedder=self.embedder, dim=self.dim)
        if not meta_path.exists():
            return state
        try:
            meta = json.loads(meta_path.read_text())
            if not isinstance(meta, dict):
                raise TypeError(f"{meta_path.name} holds {type(meta).__name__}, not an object")
            if meta.get("format") not in READABLE_FORMATS:
                raise WatchlistError(f"{meta_path}: unsupported format {meta.get('format')!r}")
            state.watchlists = {n: Watchlist(**w) for n, w in meta["watchlists"].items()}
            state.subjects = {
                sid: Subject(**{**s, "images": [EnrolledImage(**i) for i in s["images"]]})
                for sid, s in meta["subjects"].items()
            }
            emb_path = self.data_dir / "embeddings.npz"
            if emb_path.exists():
                with np.load(emb_path, allow_pickle=False) as npz:
                    state.embeddings = _read_embeddings(npz, meta["format"])
        except WatchlistError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError,
                zipfile.BadZipFile) as exc:
            raise WatchlistError(f"data directory {self.data_dir} is corrupt: "
                                 f"{type(exc).__name__}: {str(exc)[:200]}") from None
        if meta.get("embedder") != self.embedder or meta.get("dim") != self.dim:
            raise WatchlistError(
                f"{meta_path} was enrolled with embedder {meta.get('embedder')!r} "
                f"(dim {meta.get('dim')}), not {self.embedder!r} (dim {self.dim}): re-enrol")
        bad = [k for k, v in state.embeddings.items()
               if v.shape != (self.dim,) or not np.isfinite(v).all()]
        if bad:
            raise WatchlistError(f"data directory {self.data_dir} is corrupt: {len(bad)} "
                                 f"embedding(s) are not finite vectors of dim {self.dim}")
        missing = [i.image_id for s in state.subjects.values() for i in s.images
                   if i.image_id not in state.embeddings]
        if missing:
            raise WatchlistError(f"data directory {self.data_dir} is corrupt: "
                                 f"{len(missing)} enrolled image(s) have no embedding")
        return state

    def watchlists(self) -> dict[str, Watchlist]:
        return self._load().watchlists

    def subjects(self) -> dict[str, Subject]:
        return self._load().subjects

    def index(self, now: float | None = None) -> tuple[TemplateIndex, dict[str, float]]:
        """The search index over live (unexpired) subjects (exact, or IVF for large lists
        where `gallery` asks for it), and each list's threshold."""
        snapshot = self.snapshot(now)
        return snapshot.index, snapshot.thresholds

    def snapshot(self, now: float | None = None) -> Snapshot:
        """The index, thresholds, subjects and watchlists from one read of the directory.

        A reload that needs them all reads the files once: at 10k subjects one read of
        `embeddings.npz` alone took seconds here (bench/gallery_scale.py).
        """
        state = self._load()
        now = time.time() if now is None else now
        live = [s for s in state.subjects.values() if s.images and not s.expired(now)]
        thresholds = {n: w.threshold for n, w in state.watchlists.items()}
        if not live:
            return Snapshot(GalleryIndex.empty(self.dim), thresholds, state.subjects,
                            state.watchlists)
        # subject_template for every subject at once: normalised images summed per subject
        # (the mean's direction), normalised again.
        images = l2_normalise(np.stack([state.embeddings[i.image_id]
                                        for s in live for i in s.images]))
        starts = np.cumsum([0] + [len(s.images) for s in live[:-1]])
        per_subject = l2_normalise(np.add.reduceat(images, starts, axis=0))
        rows = [j for j, s in enumerate(live) for _ in s.watchlists]
        index = build_index(tuple(s.subject_id for s in live for _ in s.watchlists),
                            tuple(name for s in live for name in s.watchlists),
                            np.ascontiguousarray(per_subject[rows]), self.gallery)
        return Snapshot(index, thresholds, state.subjects, state.watchlists)

    def matcher(self, watchlists: Sequence[str] | None = None, *,
                now: float | None = None) -> tuple[SearchFn, dict[str, float]]:
        """Search over the subjects live now, as screening calls it.

        A snapshot: the data directory is read once, here; call again to see later changes.
        """
        index, thresholds = self.index(now)
        chosen = None if watchlists is None else list(watchlists)

        def search(probes: FloatArray, k: int) -> list[list[Candidate]]:
            return index.search(probes, k, chosen)

        return search, thresholds

    # -- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _change(self, actor: str, action: str, reason: str, **details: Any) -> Iterator[_State]:
        """Lock, load, let the caller change the state, then save it and audit the change."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            lock = open(self.data_dir / ".lock", "a")  # noqa: SIM115 - held for the block
        except OSError as exc:
            raise WatchlistError(f"data directory {self.data_dir} is not writable: {exc}") from exc
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._load()
            yield state
            # The change and its audit entry land together or not at all: the audit log
            # is opened before anything is saved, and a failed append puts the files back.
            try:
                audit = (self.data_dir / "audit.jsonl").open("a")
            except OSError as exc:
                raise WatchlistError(f"audit log in {self.data_dir} is not writable, nothing "
                                     f"changed: {exc.strerror}") from None
            with audit:
                before = {name: _read_or_none(self.data_dir / name)
                          for name in ("watchlist.json", "embeddings.npz")}
                self._save(state)
                try:
                    self._append_audit(audit, actor, action, reason, details)
                except OSError as exc:
                    for name, data in before.items():
                        _restore(self.data_dir / name, data)
                    raise WatchlistError(f"audit entry not written, change undone: "
                                         f"{exc.strerror}") from None

    def _save(self, state: _State) -> None:
        meta = {
            "format": FORMAT_VERSION, "embedder": self.embedder, "dim": self.dim,
            "watchlists": {n: asdict(w) for n, w in state.watchlists.items()},
            "subjects": {sid: asdict(s) for sid, s in state.subjects.items()},
        }
        buffer = io.BytesIO()
        ids = list(state.embeddings)
        vectors = (np.stack([state.embeddings[i] for i in ids]).astype(np.float32) if ids
                   else np.zeros((0, self.dim), np.float32))
        np.savez(buffer, image_ids=np.asarray(ids, dtype=np.str_), vectors=vectors)
        try:
            _atomic_write(self.data_dir / "embeddings.npz", buffer.getvalue(), private=True)
            _atomic_write(self._meta_path(), json.dumps(meta, indent=1).encode())
        except OSError as exc:
            raise WatchlistError(f"cannot write to {self.data_dir}: {exc}") from exc

    def _audit(self, actor: str, action: str, reason: str, details: dict[str, Any]) -> None:
        with (self.data_dir / "audit.jsonl").open("a") as fh:
            self._append_audit(fh, actor, action, reason, details)

    @staticmethod
    def _append_audit(fh: Any, actor: str, action: str, reason: str,
                      details: dict[str, Any]) -> None:
        entry = {"time": time.time(), "actor": actor, "action": action, "reason": reason,
                 **details}
        if fh.tell() > 0:  # after a cut last line, start a line of our own
            with open(fh.name, "rb") as tail:
                tail.seek(-1, os.SEEK_END)
                if tail.read(1) != b"\n":
                    fh.write("\n")
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())

    def record(self, *, actor: str, action: str, reason: str = "", **details: Any) -> None:
        """Audit an action that changes no watchlist (a search, a reviewer's verdict)."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._audit(actor, action, reason, details)
        except OSError as exc:
            raise WatchlistError(f"cannot write the audit log in {self.data_dir}: {exc}") from exc

    def audit_log(self) -> list[dict[str, Any]]:
        """Every audit event, oldest first, each with its line number as `id`."""
        path = self.data_dir / "audit.jsonl"
        if not path.exists():
            return []
        entries = []
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
            except ValueError:  # UnicodeDecodeError and JSONDecodeError included
                raise WatchlistError(f"{path} line {n} is not an audit entry (cut or "
                                     "overwritten?): the log needs repair") from None
            entries.append({**entry, "id": str(n)})
        return entries

    def audit_cursor(self) -> str | None:
        """Id of the last audit entry relayed to the audit topic (None: nothing yet)."""
        path = self.data_dir / "audit.relayed"
        return path.read_text().strip() or None if path.exists() else None

    def set_audit_cursor(self, entry_id: str) -> None:
        _atomic_write(self.data_dir / "audit.relayed", entry_id.encode())

    def set_watchlist(self, name: str, *, actor: str, reason: str = "",
                      threshold: float | None = None, description: str | None = None,
                      calibration: dict[str, Any] | None = None,
                      target_fpir: float | None = None, priority: int | None = None,
                      route: str | None = None) -> Watchlist:
        """Create a watchlist or change its threshold/description."""
        check_name(name, "watchlist")
        check_watchlist_settings(threshold, target_fpir, priority, route)
        with self._change(actor, "set_watchlist", reason, watchlist=name, threshold=threshold,
                          target_fpir=target_fpir, priority=priority, route=route) as state:
            wl = state.watchlists.setdefault(name, Watchlist(name))
            wl.update(threshold, description, calibration, target_fpir=target_fpir,
                      priority=priority, route=route)
            return wl

    def delete_watchlist(self, name: str, *, actor: str, reason: str = "") -> None:
        """Delete an empty watchlist (one with members is refused: remove them first)."""
        with self._change(actor, "delete_watchlist", reason, watchlist=name) as state:
            if name not in state.watchlists:
                raise WatchlistError(f"unknown watchlist {name!r}")
            members = sum(1 for s in state.subjects.values() if name in s.watchlists)
            if members:
                raise WatchlistError(f"watchlist {name!r} has {members} subject(s): "
                                     "remove them first")
            del state.watchlists[name]

    def add_subject(self, subject_id: str, watchlist: str, embeddings: list[tuple[str, float,
                    FloatArray]], *, actor: str, reason: str = "",
                    expires: float | None = None, new: bool = False) -> Subject:
        """Enrol images (label, quality, embedding) for a subject on a watchlist;
        `new=True` refuses an existing subject under the directory's lock."""
        check_name(subject_id, "subject")
        check_name(watchlist, "watchlist")
        if not embeddings:
            raise WatchlistError(f"no usable image for subject {subject_id!r}")
        for _, _, vector in embeddings:
            check_embedding(vector, self.dim)
        if expires is not None and not time.time() < expires < float("inf"):
            raise WatchlistError("the expiry must lie in the future")
        with self._change(actor, "add_subject", reason, subject=subject_id, watchlist=watchlist,
                          images=len(embeddings)) as state:
            if new and subject_id in state.subjects:
                raise SubjectExistsError(f"subject {subject_id!r} is already enrolled")
            state.watchlists.setdefault(watchlist, Watchlist(watchlist))
            now = time.time()
            subject = state.subjects.setdefault(subject_id, Subject(subject_id, [], now))
            if watchlist not in subject.watchlists:
                subject.watchlists.append(watchlist)
            if expires is not None:
                subject.expires = expires
            for label, quality, vector in embeddings:
                image_id = uuid.uuid4().hex
                state.embeddings[image_id] = vector.astype(np.float32)
                subject.images.append(EnrolledImage(image_id, label, float(quality), now))
            return subject

    def add_membership(self, subject_id: str, watchlist: str, *, actor: str,
                       reason: str = "") -> Subject:
        """Put an enrolled subject on another watchlist with the images it has (its one
        template then searches there too); already on it: nothing changes but the audit."""
        check_name(watchlist, "watchlist")
        with self._change(actor, "add_membership", reason, subject=subject_id,
                          watchlist=watchlist) as state:
            subject = state.subjects.get(subject_id)
            if subject is None:
                raise WatchlistError(f"unknown subject {subject_id!r}")
            state.watchlists.setdefault(watchlist, Watchlist(watchlist))
            if watchlist not in subject.watchlists:
                subject.watchlists.append(watchlist)
            return subject

    def remove_subject(self, subject_id: str, *, actor: str, reason: str = "",
                       watchlist: str | None = None) -> None:
        """Take a subject off one watchlist, or delete it with every embedding it has."""
        with self._change(actor, "remove_subject", reason, subject=subject_id,
                          watchlist=watchlist) as state:
            subject = state.subjects.get(subject_id)
            if subject is None:
                raise WatchlistError(f"unknown subject {subject_id!r}")
            if watchlist is not None:
                if watchlist not in subject.watchlists:
                    raise WatchlistError(f"subject {subject_id!r} is not on {watchlist!r}")
                subject.watchlists.remove(watchlist)
            if watchlist is None or not subject.watchlists:
                for image in subject.images:
                    state.embeddings.pop(image.image_id, None)
                del state.subjects[subject_id]

    def remove_image(self, subject_id: str, image_id: str, *, actor: str,
                     reason: str = "") -> Subject:
        """Delete one enrolled image and its embedding; the last one is refused (delete the
        subject instead, so no subject is left without a template)."""
        with self._change(actor, "remove_image", reason, subject=subject_id,
                          image_id=image_id) as state:
            subject = state.subjects.get(subject_id)
            if subject is None:
                raise WatchlistError(f"unknown subject {subject_id!r}")
            kept = [i for i in subject.images if i.image_id != image_id]
            if len(kept) == len(subject.images):
                raise WatchlistError(f"subject {subject_id!r} has no image {image_id[:40]!r}")
            if not kept:
                raise WatchlistError(f"image {image_id!r} is the last of subject "
                                     f"{subject_id!r}: delete the subject instead")
            subject.images = kept
            state.embeddings.pop(image_id, None)
            return subject

    def purge_expired(self, *, actor: str, now: float | None = None) -> list[str]:
        """Delete every subject past its expiry; returns their ids."""
        now = time.time() if now is None else now
        with self._change(actor, "purge_expired", "expiry") as state:
            gone = [sid for sid, s in state.subjects.items() if s.expired(now)]
            for sid in gone:
                for image in state.subjects[sid].images:
                    state.embeddings.pop(image.image_id, None)
                del state.subjects[sid]
            return gone


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _restore(path: Path, data: bytes | None) -> None:
    """Put a file back as it was (absent if it was absent)."""
    if data is None:
        path.unlink(missing_ok=True)
    else:
        _atomic_write(path, data, private=path.name == "embeddings.npz")


MAX_NAME = 200


def check_name(name: str, what: str) -> None:
    """Names are shown in listings, logs and audit lines: no blanks, no control characters
    (a newline in a name would forge a line of `watchlist list`)."""
    if not name.strip():
        raise WatchlistError(f"a {what} needs a name")
    if len(name) > MAX_NAME or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise WatchlistError(f"{what} name {name[:40]!r} has control characters or is longer "
                             f"than {MAX_NAME}")


def check_embedding(vector: FloatArray, dim: int) -> None:
    """A template row must be a finite unit vector of the store's dimension."""
    if vector.shape != (dim,):
        raise WatchlistError(f"embedding of shape {vector.shape}, expected ({dim},)")
    if not np.isfinite(vector).all() or abs(float(np.linalg.norm(vector)) - 1.0) > 1e-3:
        raise WatchlistError("embedding is not a finite unit vector")


def _atomic_write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
