"""What the matcher remembers of each camera, and which face events it lets through.

Per camera: its `SourceScreener` (tracks, open alerts, cooldowns, feedback) and where its
stream stands (session, last seq and capture time screened). The whole of it serialises
to JSON bytes (`CameraState.to_bytes`), which is what the matcher keeps in its camera
table (`matcher.table`, a changelog topic co-partitioned with the faces topic), so a
camera's state follows its partition to another worker after a crash or rebalance.

Admission (`admit`) decides before a face event touches the screener: a seq at or below
the last one screened in the same session is a redelivery (skipped); a jump of more than
`SeqPolicy.max_jump` is not trusted on its own word (one forged event with seq 10**15
would otherwise make every real event after it a "redelivery"), so it is dead-lettered,
unless `resync_after` consecutive events agree on the new position (a real gap: frames
that expired unread while the analyzer was down). Ingest numbers only frames it
publishes, so real jumps are those frames the analyzer dead-lettered or never read.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from facescreen.bus.codecs import FaceEvent, dumps
from facescreen.bus.deadletter import DeadLetter
from facescreen.core.screening import ScreeningPolicy, SearchFn, SourceScreener

STATE_VERSION = 1
log = logging.getLogger("facescreen.matcher.state")


@dataclass(frozen=True)
class SeqPolicy:
    """How far a camera's seq may jump before the event is dead-lettered (see module doc)."""

    max_jump: int = 100
    resync_after: int = 3

    def __post_init__(self) -> None:
        if self.max_jump < 1 or self.resync_after < 2:
            raise ValueError("max_jump must be >= 1 and resync_after >= 2 (one event alone "
                             "must never move a camera's position)")


@dataclass
class CameraState:
    """One camera: its screener and its stream position."""

    screener: SourceScreener
    session: str | None = None
    last_seq: int = -1
    last_captured_at: float = -math.inf
    pending_seq: int | None = None  # the last untrusted jump, and how many agreed with it
    pending_count: int = 0

    def to_bytes(self) -> bytes:
        """JSON bytes of the whole state (holds track identities: biometric)."""
        return dumps({
            "version": STATE_VERSION, "session": self.session, "last_seq": self.last_seq,
            "last_captured_at": (None if math.isinf(self.last_captured_at)
                                 else self.last_captured_at),
            "pending_seq": self.pending_seq, "pending_count": self.pending_count,
            "screener": self.screener.to_state(),
        })

    @classmethod
    def from_bytes(cls, data: bytes, search: SearchFn, thresholds: Any,
                   policy: ScreeningPolicy) -> CameraState:
        doc = json.loads(data)
        if doc.get("version") != STATE_VERSION:
            raise ValueError(f"camera state version {doc.get('version')!r} is not "
                             f"{STATE_VERSION}")
        captured = doc["last_captured_at"]
        return cls(screener=SourceScreener.from_state(doc["screener"], search, thresholds,
                                                      policy),
                   session=doc["session"], last_seq=int(doc["last_seq"]),
                   last_captured_at=-math.inf if captured is None else float(captured),
                   pending_seq=doc["pending_seq"], pending_count=int(doc["pending_count"]))


@dataclass
class ScreenerStates:
    """Live per-camera states by camera name, made by `factory` on a camera's first event.

    With a table behind it, the live object of a camera is a cache of the table's value:
    `sync` compares the bytes the table holds with the bytes this object was last loaded
    from or saved as, and reloads when they differ (another worker screened the camera
    meanwhile, a recovery replaced it) or drops it when the table lost it.
    """

    factory: Callable[[str], SourceScreener]
    seq: SeqPolicy = field(default_factory=SeqPolicy)
    cameras: dict[str, CameraState] = field(default_factory=dict)
    saved: dict[str, bytes] = field(default_factory=dict)
    loader: Callable[[bytes], CameraState] | None = None

    def sync(self, camera: str, stored: bytes | None) -> None:
        """Make the live state of `camera` the one the table holds (`stored`)."""
        if stored is None:
            if camera in self.saved:
                self.forget(camera)
            return
        if self.saved.get(camera) == stored:
            return
        if self.loader is None:
            raise RuntimeError("a table value without a loader")
        self.saved[camera] = stored
        try:
            self.cameras[camera] = self.loader(stored)
        except Exception as exc:  # unreadable (corrupt, or another version): start afresh
            self.cameras.pop(camera, None)
            log.error("camera state unreadable, starting afresh", extra={"fields": {
                "camera": camera, "error": type(exc).__name__}})
            return
        state = self.cameras[camera]
        log.info("camera state loaded", extra={"fields": {
            "camera": camera, "session": state.session, "last_seq": state.last_seq,
            "bytes": len(stored)}})

    def snapshot(self, camera: str) -> bytes | None:
        """The camera's state as bytes, or None when it is what was saved last."""
        state = self.cameras.get(camera)
        if state is None:
            return None
        data = state.to_bytes()
        return None if self.saved.get(camera) == data else data

    def mark_saved(self, camera: str, data: bytes) -> None:
        self.saved[camera] = data

    def clear(self) -> None:
        """Forget every live state (after a rebalance): the table's values are the truth."""
        self.cameras.clear()
        self.saved.clear()

    def admit(self, event: FaceEvent) -> bool:
        """True: screen it. False: a redelivery, skip it. DeadLetter: an implausible jump.

        Admission may record an untrusted jump in the camera's state, so the state
        changes (and is saved) even when the event is refused.
        """
        state = self.cameras.get(event.camera)
        if state is None or state.session != event.session:
            return True
        if event.seq <= state.last_seq:
            return False
        jump = event.seq - state.last_seq
        if jump <= self.seq.max_jump:
            state.pending_seq, state.pending_count = None, 0
            return True
        pending = state.pending_seq
        agrees = pending is not None and 0 < event.seq - pending <= self.seq.max_jump
        state.pending_count = state.pending_count + 1 if agrees else 1
        state.pending_seq = event.seq
        if state.pending_count >= self.seq.resync_after:
            state.pending_seq, state.pending_count = None, 0
            return True
        raise DeadLetter("seq_jump", f"seq jumps {jump} past the last screened seq of the "
                         f"session (limit {self.seq.max_jump}); {self.seq.resync_after} "
                         "consecutive events agreeing on a new position resynchronise")

    def screener_for(self, event: FaceEvent) -> SourceScreener:
        """The camera's screener; a new session whose clock went backwards (a file replayed)
        starts a new timeline, so tracks and cooldowns do not leak between runs."""
        state = self.cameras.get(event.camera)
        if state is None or (state.session != event.session
                             and event.captured_at < state.last_captured_at):
            state = CameraState(self.factory(event.camera))
            self.cameras[event.camera] = state
        return state.screener

    def screened(self, event: FaceEvent) -> None:
        state = self.cameras[event.camera]
        if state.session != event.session:
            state.pending_seq, state.pending_count = None, 0
        state.session, state.last_seq = event.session, event.seq
        state.last_captured_at = event.captured_at

    def forget(self, camera: str) -> None:
        """Drop a camera's live state: it failed half-way (it may be inconsistent), or the
        table no longer holds it. With a table, the next event reloads the saved one."""
        self.cameras.pop(camera, None)
        self.saved.pop(camera, None)
