"""The matcher's camera table: camera -> saved state, backed by a changelog topic.

The changelog (`matcher_state`) is co-partitioned with the faces topic: a camera's state
is written to the partition number its face events come on, one awaited record at a
time. When the consumer group gives this worker a partition, the table reads that
changelog partition up to its end before any event of the partition is screened
(`ready`), so the worker continues the camera where the previous owner (a crashed
process, or a replica that lost the partition in a rebalance) left it.

Why not a Faust `Table`: with faust-streaming 0.15.3, a worker restarted next to a
changelogged table skipped or repeated stream messages in many of ~25 restarts tried
(offsets 25, 26, then 36 of one partition reached the agent; Faust's commit then often
stopped at the hole, so the skipped events waited for the next restart; faust-streaming
issue #596 describes this race between its recovery and the stream fetcher). Without a
Faust table, every redelivered event arrived exactly once in each of 13 restarts. This
table keeps Faust's consumer out of the recovery.

"Up to its end": tansu answers ListOffsets(latest) with the last record batch's base
offset + 1, so a batch of several records looks shorter than it is (seen: 10 records,
end offset 6). The reader therefore stops at the high watermark that fetch responses
carry, which tansu reports right, and the matcher writes one record per batch (each
write is awaited before the next) so that even a ListOffsets reader sees the true end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import Histogram

from facescreen.bus.security import KafkaSecurity

log = logging.getLogger("facescreen.matcher.table")
LOAD_SECONDS = Histogram("facescreen_matcher_state_load_seconds",
                         "Reading assigned changelog partitions after a rebalance",
                         buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120))


class CameraTable:
    """Saved camera states of the partitions this worker owns, read from the changelog."""

    def __init__(self, bootstrap: list[str], topic: str, load_timeout_s: float = 120.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.load_timeout_s = load_timeout_s
        self.data: dict[bytes, bytes] = {}
        self._partition_of: dict[bytes, int] = {}
        self._position: dict[int, int] = {}  # next changelog offset not yet applied
        self._ready: dict[int, asyncio.Event] = {}
        self._assigned: set[int] = set()
        self._lock = asyncio.Lock()
        self._consumer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024, **KafkaSecurity.from_env().aiokafka_options())
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    def _event(self, partition: int) -> asyncio.Event:
        return self._ready.setdefault(partition, asyncio.Event())

    def loaded(self) -> bool:
        return all(self._event(p).is_set() for p in self._assigned)

    async def ready(self, partition: int) -> None:
        """Wait until `partition`'s states are read (it is assigned here and loaded)."""
        await self._event(partition).wait()

    def revoke(self, partitions: Iterable[int]) -> None:
        """No event of these partitions may be screened until they are read again."""
        for partition in partitions:
            self._event(partition).clear()
            self._assigned.discard(partition)

    async def assign(self, partitions: Iterable[int]) -> None:
        """Catch the assigned partitions up with the changelog, then mark them ready.

        States of partitions no longer assigned are dropped; a partition that comes back
        is read from where this worker stopped reading it, not from the beginning.
        """
        wanted = set(partitions)
        self._assigned = set(wanted)
        for partition in wanted:
            self._event(partition).clear()
        async with self._lock:
            if wanted != self._assigned:
                return  # a newer assignment arrived while we waited: it loads
            for key in [k for k, p in self._partition_of.items() if p not in wanted]:
                self.data.pop(key, None)
                self._partition_of.pop(key, None)
            for partition in set(self._position) - wanted:
                del self._position[partition]
            started = time.perf_counter()
            records = await self._read(sorted(wanted))
            LOAD_SECONDS.observe(time.perf_counter() - started)
            if wanted != self._assigned:
                return
            for partition in wanted:
                self._event(partition).set()
            log.info("camera states read", extra={"fields": {
                "partitions": sorted(wanted), "records": records,
                "cameras": len(self.data), "seconds": round(time.perf_counter() - started, 3)}})

    async def _read(self, partitions: list[int]) -> int:
        from aiokafka import TopicPartition

        if not partitions:
            return 0
        if self._consumer is None:
            await self.start()
        consumer = self._consumer
        tps = [TopicPartition(self.topic, p) for p in partitions]
        consumer.assign(tps)
        for tp in tps:  # from where this worker stopped; 0 is reset to the log start
            consumer.seek(tp, self._position.get(tp.partition, 0))
        deadline = time.monotonic() + self.load_timeout_s
        records = 0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {self.topic} took over {self.load_timeout_s} s")
            batch = await consumer.getmany(*tps, timeout_ms=200)
            for tp, got in batch.items():
                for record in got:
                    self._apply(tp.partition, record.key, record.value, record.offset)
                    records += 1
            if batch:
                continue
            # The high watermark of the fetch responses, not ListOffsets (see above).
            caught_up = True
            for tp in tps:
                mark = consumer.highwater(tp)
                caught_up = caught_up and mark is not None and await consumer.position(tp) >= mark
            if caught_up:
                return records

    def _apply(self, partition: int, key: bytes | None, value: bytes | None,
               offset: int) -> None:
        self._position[partition] = max(self._position.get(partition, 0), offset + 1)
        if key is None:
            return
        if value is None:
            self.data.pop(key, None)
            self._partition_of.pop(key, None)
        else:
            self.data[key] = value
            self._partition_of[key] = partition

    def put(self, key: bytes, partition: int, value: bytes, offset: int | None) -> None:
        """Record a state this worker wrote (at `offset` of the changelog partition)."""
        self.data[key] = value
        self._partition_of[key] = partition
        if offset is not None and offset + 1 > self._position.get(partition, 0):
            # Everything before our own write was read at assignment or written by us.
            self._position[partition] = offset + 1
