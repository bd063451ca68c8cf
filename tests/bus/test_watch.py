"""The pure parts of the bus checks: settings, offsets out of range, progress, topics."""

from __future__ import annotations

import time

import pytest
from facescreen.bus.topics import BusConfig
from facescreen.bus.watch import (
    ProgressTracker,
    WatchSettings,
    out_of_range,
    partition_problems,
    reset_target,
)
from facescreen.config.environment import EnvironmentConfigError
from facescreen.ops.health import Readiness


def test_settings_come_from_the_environment_with_defaults() -> None:
    assert WatchSettings.from_env({}) == WatchSettings(check_s=5.0, stall_s=60.0,
                                                       offset_reset="earliest")
    got = WatchSettings.from_env({"FACESCREEN_BUS_CHECK_S": "0.5", "FACESCREEN_STALL_S": "",
                                  "FACESCREEN_OFFSET_RESET": "Latest"})
    assert got == WatchSettings(check_s=0.5, stall_s=60.0, offset_reset="latest")


@pytest.mark.parametrize(("name", "value"), [("FACESCREEN_OFFSET_RESET", "none"),
                                             ("FACESCREEN_STALL_S", "-1"),
                                             ("FACESCREEN_BUS_CHECK_S", "often")])
def test_a_bad_setting_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(EnvironmentConfigError, match=f"^{name}: "):  # one line, exit 2
        WatchSettings.from_env({name: value})


def test_only_a_committed_offset_past_the_end_is_out_of_range() -> None:
    assert out_of_range(1738, 999)
    assert not out_of_range(999, 999) and not out_of_range(0, 999)
    assert not out_of_range(None, 999) and not out_of_range(1738, None)
    assert reset_target("earliest", 5, 999) == 5 and reset_target("latest", 5, 999) == 999


def test_a_partition_that_waits_without_moving_stalls() -> None:
    readiness = Readiness(stall_s=0.15)
    tracker = ProgressTracker(readiness)
    tracker.update(("frames", 0), 10, 20)  # lag 10
    tracker.update(("frames", 1), 5, 5)  # caught up
    tracker.update(("frames", 2), 0, None)  # nothing fetched yet
    time.sleep(0.1)
    tracker.update(("frames", 0), 12, 20)  # moved: the clock starts again
    time.sleep(0.1)
    assert readiness.ready()
    tracker.update(("frames", 0), 12, 21)
    time.sleep(0.1)
    assert set(readiness.stalled()) == {"frames:0"} and not readiness.ready()
    tracker.retain([("frames", 1)])  # partition 0 revoked: not ours to wait on
    assert readiness.ready()


def test_topic_problems_name_missing_topics_and_wrong_partition_counts() -> None:
    bus = BusConfig()
    specs = [bus.frames, bus.faces]
    assert partition_problems(specs, {bus.frames.name: 12, bus.faces.name: 12}) == []
    assert partition_problems(specs, {bus.frames.name: 1}) == [
        f"{bus.frames.name} has 1 partitions, configured 12", f"{bus.faces.name} missing"]
