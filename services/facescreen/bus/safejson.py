"""JSON from untrusted producers, parsed at a cost bounded by its size.

Python's `json` recurses once per nested array or object, so a few kilobytes of `[[[[`
raise RecursionError from deep inside the parser (and would exhaust the C stack with a
higher recursion limit). The nesting depth is therefore measured first, without
recursion, in a few vectorised passes that are linear in the size: a quote opens or
closes a string unless an odd run of backslashes escapes it, brackets count only outside
strings, and a running sum over them gives the depth (a regular expression over string
literals would be quadratic on a run of unclosed, escaped quotes). The input must be
UTF-8, whose multi-byte sequences never contain an ASCII byte, so scanning bytes is
exact. The parse itself refuses what JSON does not define (`NaN`, `Infinity`) and what
parses into unusable values (floats that overflow to infinity, integers with more digits
than any field of ours needs).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPEN = np.frombuffer(b"[{", np.uint8)
_CLOSE = np.frombuffer(b"]}", np.uint8)
MAX_INT_DIGITS = 18  # seq, frame_index, sizes: all far below 10**18


class JsonLimitError(ValueError):
    """The document breaks a limit: `reason` is the dead-letter code, the message says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def nesting_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in `data`, outside string literals.

    For invalid JSON the figure is an upper bound of what a parser would reach before it
    fails: up to the first error, the parser and this scan agree on where strings are.
    """
    codes = np.frombuffer(data, np.uint8)
    if codes.size == 0:
        return 0
    index = np.arange(codes.size)
    backslash = codes == _BACKSLASH
    # Length of the run of backslashes that ends just before each position.
    last_other = np.maximum.accumulate(np.where(backslash, -1, index))
    run_before = np.zeros(codes.size, np.int64)
    run_before[1:] = np.where(backslash[:-1], index[:-1] - last_other[:-1], 0)
    quote = (codes == _QUOTE) & (run_before % 2 == 0)
    inside = (np.cumsum(quote) - quote) % 2 == 1  # after an odd number of quotes: a string
    outside = ~inside & ~quote
    steps = ((np.isin(codes, _OPEN) & outside).astype(np.int32)
             - (np.isin(codes, _CLOSE) & outside).astype(np.int32))
    if not steps.any():
        return 0
    return int(np.cumsum(steps).max())


def _refuse_constant(name: str) -> Any:
    raise JsonLimitError("non_finite", f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonLimitError("non_finite", f"number {text[:24]}... overflows to infinity")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonLimitError("number_out_of_range",
                             f"an integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def loads_bounded(data: bytes, max_depth: int) -> Any:
    """Parse `data` after checking its nesting depth; every number comes out finite.

    Raises JsonLimitError (too deep, non-finite, huge integer) or ValueError (not JSON,
    not UTF-8: UnicodeDecodeError and JSONDecodeError are both ValueErrors).
    """
    text = data.decode("utf-8")
    depth = nesting_depth(data)
    if depth > max_depth:
        raise JsonLimitError("too_deep", f"nesting depth {depth} exceeds {max_depth}")
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                      parse_int=_bounded_int)
