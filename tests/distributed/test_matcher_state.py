"""The matcher's camera states in its Faust table, on a real broker (tansu), real processes.

A person stays in view of each camera across a matcher SIGKILL and restart, and across a
rebalance between two replicas: each camera must keep exactly one alert id (the track
continues: a matcher that lost the state would open a new track, hence a new id), its
later revisions, including the closing one, must carry that id, and no revision may be
published twice. The restarted matcher must have recovered the very last state written
before the kill (tansu under-reports end offsets of multi-record batches, which could
end a recovery early; each state write is its own batch, and this checks it).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from facescreen.bus.codecs import dumps
from facescreen.devstack.process import ServerProcess

from tests.distributed.fixtures_kafka import TestTopics, make_topics
from tests.distributed.test_matcher_service import (
    SUBJECT,
    Camera,
    alerts_of,
    enrol,
    face,
    start_matcher,
)
from tests.distributed.test_services import _diagnose, http_get, metric, wait_for

pytestmark = pytest.mark.slow


def stream(producer: Any, topics: TestTopics, cameras: Iterable[Camera], seqs: range,
           present: bool = True) -> int:
    """The subject in view (or nobody) on every camera for these seqs; returns events sent.
    Nobody in view is sent 3 s apart in capture time, so tracks end (relink_s is 6 s)."""
    sent = 0
    for cam in cameras:
        for seq in seqs:
            if present:
                doc = cam.event(seq, [face(SUBJECT, dx=seq % 7)])
            else:
                doc = cam.event(seq, [], captured_at=seq / 5.0 + 3.0 * (seq - seqs.start + 1))
            cam.send(producer, topics.bus.faces.name, dumps(doc))
            sent += 1
    producer.flush()
    return sent


def committed(topics: TestTopics) -> dict[int, int]:
    """The matcher group's committed offset of each faces partition."""
    from kafka.admin import KafkaAdminClient

    group = f"{topics.prefix}facescreen-matcher"
    admin = KafkaAdminClient(bootstrap_servers=topics.bootstrap)
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()
            if tp.topic == topics.bus.faces.name}


def ends(cameras: Iterable[Camera]) -> dict[int, int]:
    """The offset after the last event sent to each partition."""
    out: dict[int, int] = {}
    for cam in cameras:
        for partition, offset in cam.sent:
            out[partition] = max(out.get(partition, 0), offset + 1)
    return out


def committed_all(topics: TestTopics, cameras: Iterable[Camera]) -> bool:
    """The matcher group has committed every event sent (so each was screened and saved)."""
    done = committed(topics)
    want = ends(cameras)
    _last_check[:] = [f"committed {sorted(done.items())}, sent up to {sorted(want.items())}"]
    return all(done.get(p, 0) >= n for p, n in want.items())


_last_check: list[str] = []


@pytest.fixture(autouse=True)
def _explain_commits() -> Iterator[None]:
    """A timed-out wait shows the last committed offsets it saw."""

    def explain() -> str:
        return "; ".join(_last_check)

    _diagnose.append(explain)
    yield
    _diagnose.remove(explain)


def check_one_alert_per_camera(topics: TestTopics, cameras: Iterable[Camera]) -> None:
    for cam in cameras:
        alerts = alerts_of(topics, cam.name)
        opened = {a["alert_id"] for a in alerts if a["state"] == "open"}
        assert len(opened) == 1, (cam.name, [(a["state"], a["frame_index"]) for a in alerts])
        assert {a["alert_id"] for a in alerts} == opened, cam.name
        assert any(a["state"] == "closed" for a in alerts), cam.name
        revisions = Counter((a["alert_id"], a["revision"]) for a in alerts)
        assert all(n == 1 for n in revisions.values()), (cam.name, revisions)


def loaded_states(server: ServerProcess) -> dict[str, int]:
    """camera -> last_seq of each state the matcher loaded from its table."""
    found = {}
    for line in server.log_path.read_text().splitlines():
        if '"camera state loaded"' in line:
            entry = json.loads(line)
            found[entry["camera"]] = entry["last_seq"]
    return found


def test_sigkill_and_restart_continue_every_track_under_its_alert_id(
        broker: str, tmp_path: Path) -> None:
    from kafka import KafkaProducer

    enrol(tmp_path / "data")
    topics = make_topics(broker, "kill")
    cams = [Camera(f"k{i}") for i in range(4)]
    producer = KafkaProducer(bootstrap_servers=broker)
    # Commits only every 100 events (Faust's commit_every, when the next one is fetched) or
    # 60 s: phase 1 (100 events) gets committed, phase 2 is screened and saved but not
    # committed when the kill comes, so it is all delivered again.
    first, port = start_matcher("kill1", topics, tmp_path / "data", tmp_path,
                                "--commit-interval", "60")
    try:
        sent = stream(producer, topics, cams, range(25))
        wait_for("phase 1 screened", lambda: metric(
            port, "facescreen_matcher_events_total") >= sent)
        phase1 = ends(cams)
        sent += stream(producer, topics, cams, range(25, 35))
        wait_for("phase 2 screened", lambda: metric(
            port, "facescreen_matcher_events_total") >= sent)
        done = committed(topics)
        assert all(done.get(p, 0) >= n for p, n in phase1.items()), (done, phase1)
        redo = sum(n - done.get(p, 0) for p, n in ends(cams).items())
        assert redo >= 4 * 5, "phase 2 was committed: the kill would redo nothing"
        first.kill()
    finally:
        first.stop()
    second, port = start_matcher("kill2", topics, tmp_path / "data", tmp_path)
    try:
        fresh = stream(producer, topics, cams, range(35, 45))
        fresh += stream(producer, topics, cams, range(45, 49), present=False)  # tracks end
        wait_for("phase 3 screened", lambda: metric(
            port, "facescreen_matcher_events_total", outcome="screened") >= fresh)
        wait_for("everything committed", lambda: committed_all(topics, cams), timeout_s=30)
        skipped = metric(port, "facescreen_matcher_events_total", outcome="duplicate")
        screened = metric(port, "facescreen_matcher_events_total", outcome="screened")
        print(f"\nafter the kill: {redo} events redelivered, {skipped:.0f} skipped as "
              f"repeats, {screened:.0f} screened")
        assert loaded_states(second) == {cam.name: 34 for cam in cams}
        assert screened == fresh  # every new event once, none lost, no repeat re-screened
        assert skipped >= redo  # phase 2 came again and was recognised
        check_one_alert_per_camera(topics, cams)
        assert http_get(port, "/readyz")[0] == 200
    finally:
        second.stop()
        producer.close()


def partitions_of(server: ServerProcess) -> set[str]:
    """The faces partitions of the matcher's last assignment (from its log)."""
    last: list[str] = []
    for line in server.log_path.read_text().splitlines():
        if '"partitions assigned"' in line:
            last = json.loads(line)["partitions"]
    return {p for p in last if re.search(r"facescreen\.faces:\d+$", p)}


def test_a_rebalance_between_two_replicas_keeps_each_cameras_alert_id(
        broker: str, tmp_path: Path) -> None:
    from kafka import KafkaProducer

    enrol(tmp_path / "data")
    topics = make_topics(broker, "rebal")
    cams = [Camera(f"r{i}") for i in range(6)]
    producer = KafkaProducer(bootstrap_servers=broker)
    first, _ = start_matcher("replica1", topics, tmp_path / "data", tmp_path)
    second: ServerProcess | None = None
    try:
        stream(producer, topics, cams, range(15))
        wait_for("phase 1 committed", lambda: committed_all(topics, cams), timeout_s=60)
        second, second_port = start_matcher("replica2", topics, tmp_path / "data", tmp_path)
        wait_for("the partitions split between the replicas", lambda: (
            partitions_of(first) and partitions_of(second)
            and not partitions_of(first) & partitions_of(second)), timeout_s=60)
        stream(producer, topics, cams, range(15, 30))
        wait_for("phase 2 committed", lambda: committed_all(topics, cams), timeout_s=60)
        assert metric(second_port, "facescreen_matcher_events_total") > 0
        first.stop()  # SIGTERM: its partitions move to the second replica
        stream(producer, topics, cams, range(30, 45))
        stream(producer, topics, cams, range(45, 49), present=False)
        wait_for("phase 3 committed", lambda: committed_all(topics, cams), timeout_s=60)
        assert len(partitions_of(second)) == topics.bus.faces.partitions
        check_one_alert_per_camera(topics, cams)
    finally:
        first.stop()
        if second is not None:
            second.stop()
        producer.close()


def test_the_table_reads_to_the_true_end_of_a_multi_record_batch(broker: str) -> None:
    """tansu's ListOffsets says 6 for ten records whose last five share a batch; the table
    must still end with the tenth (it reads to the fetch responses' high watermark)."""
    import asyncio

    from aiokafka import AIOKafkaProducer
    from facescreen.bus.faustapp import key_partition
    from facescreen.matcher.table import CameraTable
    from kafka import KafkaConsumer, TopicPartition

    topics = make_topics(broker, "table")
    name = topics.bus.matcher_state.name
    partition = key_partition(b"cam", topics.bus.faces.partitions)

    async def write_and_read() -> tuple[bytes | None, bool]:
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        try:
            for i in range(5):  # one awaited record per batch
                await (await producer.send(name, key=b"cam", value=b"%d" % i,
                                           partition=partition))
            pending = [await producer.send(name, key=b"cam", value=b"%d" % i,
                                           partition=partition) for i in range(5, 10)]
            await asyncio.gather(*pending)  # five records in one batch
        finally:
            await producer.stop()
        table = CameraTable([broker], name)
        try:
            await table.assign({partition})
            ready = table.loaded()
        finally:
            await table.stop()
        return table.data.get(b"cam"), ready

    value, ready = asyncio.run(write_and_read())
    consumer = KafkaConsumer(bootstrap_servers=broker)
    listed = consumer.end_offsets([TopicPartition(name, partition)])
    consumer.close()
    print(f"\nListOffsets(latest) after 10 records: {next(iter(listed.values()))}")
    assert ready and value == b"9"
