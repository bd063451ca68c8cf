"""A pydantic ValidationError as the one line a person reads: `WHERE: FIELD: WHAT, got VALUE`.

Every configuration loader (cameras, topics, environment) reports only the first problem,
with the field's path as written in the file (`cameras[1].fps`) or the variable's name,
what is wrong in words, and the offending value unless the field may hold a secret.
"""

from __future__ import annotations

import re
import types
from collections.abc import Collection
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

_SHOWN_CHARS = 40
_WORDS = ((r"a valid dictionary( or instance of \w+)?", "a table"), (r"a valid list", "an array"))


def one_line(exc: ValidationError, where: str | None, model: type[BaseModel], *,
             hidden: Collection[str] = ()) -> str:
    """The first error of `exc`; a value is shown unless its field name is in `hidden`."""
    errors = exc.errors(include_url=False)
    # an unknown key first: a misspelt key also makes its intended one look missing
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(p for p in error["loc"] if not _is_branch_tag(p))
    field = _path(loc)
    what = _what(error, model, loc)
    last = next((p for p in reversed(loc) if isinstance(p, str)), "")
    value = error.get("input")
    if (loc and last not in hidden and error["type"] not in ("missing", "extra_forbidden")
            and isinstance(value, str | int | float)  # never a table: it may hold a secret
            and not (isinstance(value, str) and repr(value) in what)):  # said already
        what += f", got {_shown(value)}"
    parts = [p for p in (where, field) if p]
    return ": ".join([*parts, what])


def _what(error: ErrorDetails, model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        return "unknown key" + (f" (known: {', '.join(known)})" if known else "")
    if kind == "missing":
        return "required"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix):]
    if message.startswith("Input should"):
        message = message[len("Input "):]
    for pydantic_word, toml_word in _WORDS:
        message = re.sub(pydantic_word, toml_word, message)
    return message[:1].lower() + message[1:]


def _path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"a {type(value).__name__} of {len(text)} chars"


def _is_branch_tag(part: Any) -> bool:
    """pydantic names a union's branches in the location (`function-after[...]`, `str`)."""
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool"))


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the (nested) model at `loc` accepts, by their names as written."""
    current: Any = model
    for part in loc:
        current = _model_in(current)
        if current is None:
            return []
        if isinstance(part, int):
            continue
        field = next((f for n, f in current.model_fields.items()
                      if (f.alias or n) == part), None)
        if field is None:
            return []
        current = field.annotation
    found = _model_in(current)
    return [] if found is None else [f.alias or n for n, f in found.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model inside `annotation` (itself, or in X | None, list[X], tuple[X, ...])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType, list, tuple):
        for arg in get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
