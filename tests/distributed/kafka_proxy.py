"""A TCP proxy in front of a broker that can stop passing one client's writes.

It reads the Kafka request framing (a 4-byte size, then api_key, api_version,
correlation id and client id) on the way to the broker, and while `block_produce` is set
it holds every Produce request (api key 0) of clients whose id starts with `client_prefix`,
so those clients see their writes time out while their reads, and every other client,
carry on: a broker that stops acknowledging one service's output, on a real connection.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

PRODUCE = 0


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class KafkaProxy:
    """Listens on 127.0.0.1:`port` and forwards to `upstream`; stop with `close()`."""

    def __init__(self, upstream: int, client_prefix: str = "faust") -> None:
        self.upstream = upstream
        self.client_prefix = client_prefix.encode()
        self.block_produce = threading.Event()
        self.held = 0
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True, name="kafka-proxy").start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._raw, args=(server, client), daemon=True).start()

    def _blocked(self, frame: bytes) -> bool:
        if not self.block_produce.is_set() or len(frame) < 10:
            return False
        api_key, = struct.unpack(">h", frame[:2])
        size, = struct.unpack(">h", frame[8:10])
        client_id = frame[10:10 + max(size, 0)]
        return api_key == PRODUCE and client_id.startswith(self.client_prefix)

    def _requests(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                head = _read_exact(src, 4)
                if head is None:
                    break
                frame = _read_exact(src, struct.unpack(">i", head)[0])
                if frame is None:
                    break
                if self._blocked(frame):
                    self.held += 1
                    continue  # never answered: the client's request times out
                dst.sendall(head + frame)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()

    def _raw(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
