"""Which frames are stale, and that the low-latency bus settings reach the Kafka clients.

The fetch wait matters because faust-streaming hands aiokafka a fixed 1.5 s whatever its
settings say, and tansu holds every fetch that finds nothing new for the whole wait: the
override is checked on the aiokafka consumer the Faust app really builds, so a Faust
upgrade that renames the hook fails here instead of quietly bringing the delay back.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from typing import Any, cast

import pytest
from facescreen.bus.codecs import FrameMeta
from facescreen.bus.entry import FramePolicy, frame_age, is_stale
from facescreen.bus.faustapp import FaustTuning, make_app
from facescreen.cli.main import main

NOW = 1_800_000_000.0
LIVE = FrameMeta("cam", "s", 0, 0, NOW, 640, 480)


@pytest.mark.parametrize(("captured_at", "max_age", "stale"), [
    (NOW - 2.5, 2.0, True),  # live, older than the limit
    (NOW - 1.5, 2.0, False),
    (NOW - 3600, 0.0, False),  # 0: freshness off
    (NOW + 30, 2.0, False),  # a camera clock ahead of ours: never stale
    (12.0, 2.0, False),  # video time (a file): screened whole, never stale
    (0.0, 2.0, False),
])
def test_only_live_frames_older_than_the_limit_are_stale(captured_at: float, max_age: float,
                                                        stale: bool) -> None:
    meta = replace(LIVE, captured_at=captured_at)
    assert is_stale(meta, FramePolicy(max_age_s=max_age), NOW) is stale


def test_frame_age_is_none_for_video_time() -> None:
    assert frame_age(replace(LIVE, captured_at=40.0), NOW) is None
    assert frame_age(replace(LIVE, captured_at=NOW - 0.25), NOW) == pytest.approx(0.25)


@pytest.mark.parametrize("age", [-1.0, math.nan, math.inf])
def test_a_negative_or_undefined_max_age_is_refused(age: float) -> None:
    with pytest.raises(ValueError):
        FramePolicy(max_age_s=age)


@pytest.mark.parametrize("changes", [{"fetch_wait_s": -0.01}, {"linger_s": 6.0},
                                     {"max_poll_records": 0}, {"producer_batch_bytes": 0}])
def test_impossible_tuning_is_refused(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FaustTuning(**changes)  # type: ignore[arg-type]


def test_the_faust_app_passes_fetch_wait_sizes_and_linger_to_its_clients() -> None:
    tuning = FaustTuning(fetch_wait_s=0.035, max_poll_records=7, fetch_partition_bytes=123_456,
                         linger_s=0.004, producer_batch_bytes=65_536)
    app = make_app("freshness-rules", ["127.0.0.1:9"], tuning)

    async def built() -> tuple[int, int, int]:
        consumer = cast(Any, app.consumer)._thread._create_worker_consumer(app.transport)
        try:
            return (consumer._fetch_max_wait_ms, consumer._max_poll_records,
                    consumer._max_partition_fetch_bytes)
        finally:
            await consumer.stop()

    assert asyncio.run(built()) == (35, 7, 123_456)
    assert (app.producer.linger_ms, app.producer.max_batch_size) == (4, 65_536)
    default = make_app("freshness-defaults", ["127.0.0.1:9"], FaustTuning())
    assert default.transport.fetch_wait_ms == 50  # type: ignore[attr-defined]


@pytest.mark.parametrize("argv", [
    ["analyzer", "--max-frame-age", "-1"],
    ["analyzer", "--fetch-wait", "-0.5"],
    ["matcher", "--data-dir", ".", "--linger", "9"],
])
def test_bad_freshness_and_bus_flags_are_one_line_errors(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*argv, "--bootstrap", "127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("facescreen: error: ") and err.count("\n") == 1, err
