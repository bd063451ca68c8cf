"""What both Triton client modules share: gRPC channel settings, error translation, inputs.

A server that is down, gone or unreachable becomes `InferenceUnavailable` (retry later); a
request the server refuses becomes `InferenceError` (the request is at fault).
"""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

_MAX_MESSAGE = 2**31 - 1
# tritonclient's own limits, plus a short reconnect back-off: a restarted server is used again
# within ~2 s instead of gRPC's default of up to two minutes.
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
# gRPC statuses that mean "no server to talk to" rather than "the server said no".
_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED",
                "StatusCode.CANCELLED"}
# Answers that mean "this model is not serving right now" (not loaded, loading, or its python
# stub died and is being restarted): retry later, the request itself is not at fault.
_UNAVAILABLE_MESSAGES = ("unknown model", "is not ready", "is not healthy", "Stub process")


class InferenceUnavailable(RuntimeError):  # noqa: N818 - the name the analyzer catches
    """The inference server cannot be reached (down, restarting, gone mid-call, timed out)."""


class InferenceError(RuntimeError):
    """The server answered but refused or failed the request (bad input, model error)."""


def _translate(exc: InferenceServerException, url: str, what: str) -> RuntimeError:
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    if status in _UNAVAILABLE or any(m in message for m in _UNAVAILABLE_MESSAGES):
        return InferenceUnavailable(f"Triton at {url} is unavailable for {what}: "
                                    f"{status or 'no status'}: {message}")
    return InferenceError(f"Triton at {url} failed {what}: {status or 'no status'}: {message}")


def _input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor
