"""Publishing a reviewer's verdict on the feedback topic (keyed by camera, like faces).

The send is confirmed by the broker before the command reports success: `flush()` does
not raise on a failed send, the future's `get()` does.
"""

from __future__ import annotations

import json

from facescreen.alerts.feedback import FEEDBACK_SCHEMA_VERSION, feedback_to_doc
from facescreen.bus.security import kafka_options
from facescreen.bus.topics import BusConfig
from facescreen.core.feedback import Feedback


class PublishError(RuntimeError):
    """The broker did not take the verdict; the message says why."""


def publish_feedback(bootstrap: list[str], prefix: str, feedback: Feedback,
                     timeout_s: float = 15.0) -> None:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    if feedback.camera is None:
        raise PublishError("feedback for the topic needs the alert's camera")
    topic = BusConfig().with_prefix(prefix).feedback.name
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all",
                             allow_auto_create_topics=False, max_block_ms=int(timeout_s * 1000),
                             client_id="facescreen-feedback", **kafka_options())
    try:
        future = producer.send(
            topic, key=feedback.camera.encode(),
            value=json.dumps(feedback_to_doc(feedback), sort_keys=True).encode(),
            headers=[("schema_version", str(FEEDBACK_SCHEMA_VERSION).encode()),
                     ("content_type", b"application/json")])
        future.get(timeout=timeout_s)
    except KafkaError as exc:
        raise PublishError(f"feedback not published to {topic}: {type(exc).__name__}") from None
    finally:
        producer.close(timeout=5)
