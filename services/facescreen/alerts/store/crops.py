"""Face crops of alerts (opt-in): JPEG files 0600 in a 0700 folder, one per alert.

A crop is a face picture, biometric data: it is kept only where the operator asks for a
crops folder, it is readable by the service's user only, and it goes when its alert goes
(retention, erasure). Writes are atomic (a temporary file renamed into place), so a
reader never sees half a picture. File names are the alert id, never a person's name.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from facescreen.alerts.store.records import StoreError

MAX_CROP_BYTES = 4 * 1024 * 1024
JPEG_MAGIC = b"\xff\xd8\xff"
SUFFIX = ".jpg"


class CropFolder:
    """The folder of crops; created 0700 (and tightened to 0700 if it exists)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.path, 0o700)
        except OSError as exc:
            raise StoreError(f"cannot use crops folder {self.path}: "
                             f"{exc.strerror or exc}") from None

    @staticmethod
    def name_for(alert_id: str) -> str:
        return alert_id + SUFFIX

    def write(self, name: str, data: bytes) -> None:
        """Write `data` (a JPEG) as `name`, 0600, atomically."""
        if len(data) > MAX_CROP_BYTES:
            raise StoreError(f"crop of {len(data):,} bytes exceeds {MAX_CROP_BYTES:,}")
        if not data.startswith(JPEG_MAGIC):
            raise StoreError("a crop must be a JPEG image")
        final = self._path(name)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    def read(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def remove(self, name: str) -> bool:
        """Delete a crop; True if there was one. Any other failure is a StoreError: an
        erasure that cannot delete the picture must not report success."""
        try:
            self._path(name).unlink()
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot delete crop {name}: {exc.strerror or exc}") from None

    def names(self, older_than_s: float = 0.0) -> Iterator[str]:
        """Names of the crops in the folder (not temporary files), optionally only those
        last written more than `older_than_s` ago."""
        cutoff = time.time() - older_than_s
        for entry in os.scandir(self.path):
            if (entry.is_file() and entry.name.endswith(SUFFIX) and not entry.name.startswith(".")
                    and (older_than_s <= 0 or entry.stat().st_mtime < cutoff)):
                yield entry.name

    def _path(self, name: str) -> Path:
        if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(SUFFIX):
            raise StoreError(f"bad crop file name {name!r}")
        return self.path / name
