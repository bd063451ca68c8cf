"""Valid instances of our JSON Schemas, and mutants of them, for fuzzing the input topics.

hypothesis-jsonschema is not installed here, so this walks a schema itself: the keywords
our schemas use (`$ref` into `$defs`, const, enum, type lists, required, properties,
additionalProperties, min/max, lengths, item counts, the uuid format, simple patterns).
A mutant is a valid instance broken in one place, the way a buggy or hostile producer
breaks it: a required field dropped, a value of the wrong type, a bound crossed, a field
the schema forbids, a value nested thousands deep, a huge string, a non-finite number, a
lone surrogate (valid JSON, `"\\ud800"`, that no UTF-8 encoder accepts).

The generator takes a `random.Random`, so one implementation feeds both the hypothesis
tests (through `st.randoms()`, which hypothesis replays and shrinks) and the 100k-event
bench (a seeded Random, far cheaper per message than a hypothesis draw). A mutant may
happen to stay valid (a bound-free field given another value of its type): whoever uses
them asks the schema (`validator`) which ones are invalid instead of assuming it.
"""

from __future__ import annotations

import copy
import json
import random
import re
import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
Schema = Mapping[str, Any]
Path_ = tuple[str | int, ...]
# Free text, with what breaks naive code: NUL, newline, quote, right-to-left override, emoji.
TEXT = string.ascii_letters + string.digits + " _-./é漢\x00\n\"\\\u202e\U0001f600"
PATTERN_HEAD, PATTERN_TAIL = string.ascii_lowercase, string.ascii_lowercase + string.digits
MUTATIONS = ("drop_required", "wrong_type", "out_of_range", "extra_field", "deep_nesting",
             "huge_string", "non_finite", "lone_surrogate")
_TYPES_OF = {type(None): "null", bool: "boolean", int: "integer", float: "number",
             str: "string", list: "array", dict: "object"}
_OTHER_TYPES: tuple[Any, ...] = (None, True, 7, -1.5, "7", [], {})


@cache
def load(name: str) -> dict[str, Any]:
    """`schemas/<name>.schema.json`."""
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    return schema


def _resolve(schema: Schema, root: Schema) -> Schema:
    while "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _types(schema: Schema) -> list[str]:
    kind = schema.get("type")
    if kind is None:
        return [_TYPES_OF[type(v)] for v in schema.get("enum", [schema.get("const")])]
    return [kind] if isinstance(kind, str) else list(kind)


def _number(schema: Schema, rng: random.Random, integer: bool) -> int | float:
    lo = schema.get("minimum", -(2**31) if integer else -1e9)
    hi = schema.get("maximum", 2**31 if integer else 1e9)
    if rng.random() < 0.2:
        bound: int | float = rng.choice([lo, hi])
        return bound
    return rng.randint(int(lo), int(hi)) if integer else rng.uniform(lo, hi)


def _string(schema: Schema, rng: random.Random) -> str:
    if schema.get("format") == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    lo = schema.get("minLength", 0)
    size = rng.randint(lo, min(schema.get("maxLength", lo + 24), lo + 24))
    if "pattern" not in schema:
        return "".join(rng.choice(TEXT) for _ in range(size))
    text = "".join([rng.choice(PATTERN_HEAD)] + [rng.choice(PATTERN_TAIL)
                                                for _ in range(max(0, size - 1))])
    if not re.search(schema["pattern"], text):
        raise ValueError(f"cannot generate strings for pattern {schema['pattern']!r}")
    return text


def instance(schema: Schema, rng: random.Random, root: Schema | None = None) -> Any:
    """A random document that `schema` accepts."""
    root = root or schema
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = rng.choice(_types(schema) or ["null"])
    if kind in ("integer", "number"):
        return _number(schema, rng, kind == "integer")
    if kind == "string":
        return _string(schema, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        lo = schema.get("minItems", 0)
        count = rng.randint(lo, min(schema.get("maxItems", lo + 3), lo + 3))
        return [instance(schema.get("items", {}), rng, root) for _ in range(count)]
    if kind == "object":
        required = set(schema.get("required", ()))
        doc = {name: instance(sub, rng, root) for name, sub in schema.get("properties", {}).items()
               if name in required or rng.random() < 0.5}
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            width = schema.get("propertyNames", {}).get("maxLength", 16)
            for _ in range(rng.randint(0, min(3, schema.get("maxProperties", 3)))):
                doc[_string({"minLength": 1, "maxLength": width}, rng)] = instance(extra, rng, root)
        return doc
    return None


def _nodes(doc: Any, schema: Schema, root: Schema, path: Path_ = ()) -> list[tuple[Path_, Schema]]:
    """Every value of `doc` with the (resolved) schema that governs it."""
    schema = _resolve(schema, root)
    out = [(path, schema)]
    if isinstance(doc, dict):
        extra = schema.get("additionalProperties", {})
        for name, value in doc.items():
            sub = schema.get("properties", {}).get(name, extra if isinstance(extra, Mapping) else {})
            out += _nodes(value, sub, root, (*path, name))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _nodes(value, schema.get("items", {}), root, (*path, i))
    return out


def _get(doc: Any, path: Path_) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _set(doc: Any, path: Path_, value: Any) -> Any:
    if not path:
        return value
    _get(doc, path[:-1])[path[-1]] = value
    return doc


@dataclass
class Mutant:
    """A broken document; `encode()` writes it, raw tokens (deep nesting, 1e999) included."""

    kind: str
    doc: Any
    tokens: dict[str, str] = field(default_factory=dict)

    def raw(self, token: str) -> str:
        placeholder = f"\x00raw{len(self.tokens)}\x00"
        self.tokens[placeholder] = token
        return placeholder

    def substitute(self, text: str) -> str:
        for placeholder, token in self.tokens.items():
            text = text.replace(json.dumps(placeholder), token)
        return text

    def encode(self) -> bytes:
        return self.substitute(json.dumps(self.doc)).encode("utf-8", "surrogatepass")


def _break_bound(schema: Schema, value: Any, rng: random.Random) -> tuple[bool, Any]:
    """A value just outside one of the node's bounds, if it has any."""
    options: list[Any] = []
    integer = "integer" in _types(schema)
    if "minimum" in schema:
        options.append(schema["minimum"] - (1 if integer else rng.choice([1e-6, 1, 1e300])))
    if "maximum" in schema:
        options.append(schema["maximum"] + (1 if integer else rng.choice([1e-6, 1, 1e300])))
    if schema.get("maxLength") is not None:
        options.append("x" * (schema["maxLength"] + 1))
    if schema.get("minLength", 0) > 0:
        options.append("")
    if "maxItems" in schema and isinstance(value, list):
        options.append(value + [value[0] if value else 0] * (schema["maxItems"] + 1 - len(value)))
    if schema.get("minItems", 0) > 0:
        options.append([])
    if "enum" in schema or "const" in schema:
        options.append("not-" + str(schema.get("const", "enum")))
    if schema.get("format") == "uuid":
        options.append(rng.choice(["not-a-uuid", "0" * 36, str(uuid.UUID(int=0))[:-1]]))
    if "pattern" in schema:
        options.append(rng.choice([" leading space", "a/b", "..", "x\ny"]))
    return (True, rng.choice(options)) if options else (False, value)


def mutate(doc: Any, schema: Schema, rng: random.Random, kind: str | None = None) -> Mutant:
    """`doc` broken in one place (`kind`, or a random one of MUTATIONS)."""
    mutant = Mutant(kind or rng.choice(MUTATIONS), copy.deepcopy(doc))
    nodes = _nodes(mutant.doc, schema, schema)
    path, sub = rng.choice(nodes)
    if mutant.kind == "drop_required":
        owners = [(p, s) for p, s in nodes if isinstance(_get(mutant.doc, p), dict)
                  and set(s.get("required", ())) & set(_get(mutant.doc, p))]
        if owners:
            where, owner = rng.choice(owners)
            node = _get(mutant.doc, where)
            del node[rng.choice(sorted(set(owner.get("required", ())) & set(node)))]
            return mutant
        mutant.kind = "wrong_type"
    if mutant.kind == "out_of_range":
        bounded = [(p, s) for p, s in nodes if _break_bound(s, _get(mutant.doc, p), rng)[0]]
        if bounded:
            path, sub = rng.choice(bounded)
            broken = _break_bound(sub, _get(mutant.doc, path), rng)[1]
            mutant.doc = _set(mutant.doc, path, broken)
            return mutant
        mutant.kind = "wrong_type"
    if mutant.kind == "extra_field":
        closed = [p for p, s in nodes if s.get("additionalProperties") is False]
        if closed:
            _get(mutant.doc, rng.choice(closed))["unexpected_field"] = rng.choice(_OTHER_TYPES)
            return mutant
        mutant.kind = "wrong_type"
    if mutant.kind == "lone_surrogate":  # valid JSON ("\\ud800"), not encodable as UTF-8
        texts = [p for p, _ in nodes if isinstance(_get(mutant.doc, p), str)]
        if texts:
            where = rng.choice(texts)
            mutant.doc = _set(mutant.doc, where, "\ud800" + _get(mutant.doc, where))
            return mutant
        mutant.kind = "wrong_type"
    if mutant.kind == "wrong_type":
        allowed = set(_types(sub)) | ({"integer"} if "number" in _types(sub) else set())
        others = [v for v in _OTHER_TYPES if _TYPES_OF[type(v)] not in allowed] or ["?"]
        mutant.doc = _set(mutant.doc, path, copy.deepcopy(rng.choice(others)))
    elif mutant.kind == "deep_nesting":
        depth = rng.choice([9, 64, 2_000, 100_000])
        mutant.doc = _set(mutant.doc, path, mutant.raw("[" * depth + "]" * depth))
    elif mutant.kind == "huge_string":
        size = rng.choice([300, 5_000, 70_000, 1_100_000])
        mutant.doc = _set(mutant.doc, path, rng.choice(["A", "\x00", "\U0001f600"]) * size)
    elif mutant.kind == "non_finite":
        token = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" * 40])
        mutant.doc = _set(mutant.doc, path, mutant.raw(token))
    return mutant


def valid(name: str) -> st.SearchStrategy[Any]:
    """Hypothesis: documents that `schemas/<name>.schema.json` accepts."""
    schema = load(name)
    return st.randoms(use_true_random=False).map(lambda rng: instance(schema, rng))


def mutants(name: str) -> st.SearchStrategy[Mutant]:
    """Hypothesis: valid documents of `schemas/<name>.schema.json`, each broken in one place."""
    schema = load(name)
    return st.tuples(valid(name), st.randoms(use_true_random=False)).map(
        lambda pair: mutate(pair[0], schema, pair[1]))
