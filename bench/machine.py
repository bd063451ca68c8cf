"""What machine a benchmark ran on, and how busy it was: recorded beside every figure."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

from facescreen.analyzer.runtime import cpu_flags

FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    flags = cpu_flags()
    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "flags": [f for f in FLAGS_OF_INTEREST if f in flags],
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "time": time.strftime("%Y-%m-%d %H:%M:%S %z")}
