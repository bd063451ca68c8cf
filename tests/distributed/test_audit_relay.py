"""The audit relay moves its cursor only past entries the broker acknowledged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from facescreen.bus.topics import BusConfig, create_topics
from facescreen.cli.main import main
from facescreen.core.alignment import l2_normalise
from facescreen.devstack.tansu import bootstrap, start_broker
from facescreen.watchlist.store import LocalWatchlistStore


def _enrol(store: LocalWatchlistStore, name: str) -> None:
    vec = l2_normalise(np.random.default_rng(len(name)).normal(size=8).astype(np.float32))
    store.add_subject(name, "vip", [("a.jpg", 0.9, vec)], actor="op")


def test_relay_keeps_its_cursor_when_the_broker_is_gone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = LocalWatchlistStore(tmp_path / "data", embedder="dlib-resnet29-128", dim=8)
    _enrol(store, "alice")
    broker = start_broker(tmp_path / "tansu")
    try:
        create_topics(bootstrap(broker), BusConfig())
        args = ["watchlist", "audit-relay", "--data-dir", str(tmp_path / "data"),
                "--bootstrap", bootstrap(broker)]
        assert main(args) == 0
        assert "relayed 1 audit entry" in capsys.readouterr().out
        relayed = store.audit_cursor()
        _enrol(store, "bob")
        broker.stop()
        assert main(args) == 2  # nothing acknowledged: one line, exit 2
        assert "cursor was not moved" in capsys.readouterr().err
        assert store.audit_cursor() == relayed
        broker.start()  # same port; this build keeps nothing, so the topics come anew
        create_topics(bootstrap(broker), BusConfig())
        assert main(args) == 0
        assert "relayed 1 audit entry" in capsys.readouterr().out
        assert store.audit_cursor() != relayed
    finally:
        broker.stop()
