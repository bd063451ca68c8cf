"""The schema walker behind the input-topic fuzzing: its valid documents are valid and its
mutants mostly are not, so "invalid means dead-lettered" is not tested on nothing."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from facescreen.alerts.events import validator

from tests.fuzz.schema_strategies import MUTATIONS, instance, load, mutate

SCHEMAS = ("frame", "feedback", "alert", "face_event")


@pytest.mark.parametrize("name", SCHEMAS)
def test_instances_are_valid_and_mutants_mostly_invalid(name: str) -> None:
    schema, rng = load(name), random.Random(name)
    still_valid: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for _ in range(150):
        doc = instance(schema, rng)
        validator(name).validate(doc)
        mutant = mutate(doc, schema, rng)
        kinds[mutant.kind] += 1
        try:
            back = json.loads(mutant.encode())
        except (ValueError, RecursionError):
            continue  # not JSON at all (NaN is, to Python; 100,000 brackets are not)
        if validator(name).is_valid(back):
            still_valid[mutant.kind] += 1
    assert len(kinds) >= len(MUTATIONS) - 2  # extra_field needs a closed object
    # A lone surrogate is valid JSON text; the rest break the schema nearly always.
    assert sum(n for kind, n in still_valid.items() if kind != "lone_surrogate") <= 15


def test_each_kind_of_mutation_breaks_what_it_says() -> None:
    schema, rng = load("feedback"), random.Random(3)
    doc = instance(schema, rng)
    dropped = mutate(doc, schema, rng, "drop_required").doc
    assert len(dropped) == len(doc) - 1
    assert "unexpected_field" in mutate(doc, schema, rng, "extra_field").doc
    deep = mutate(doc, schema, rng, "deep_nesting").encode()
    assert deep.count(b"[") >= 9
    assert "\ud800" in json.dumps(json.loads(mutate(doc, schema, rng, "lone_surrogate").encode()),
                                  ensure_ascii=False)
