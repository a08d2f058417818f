"""The monitor's own instruction check agrees with vmagent/schemas/instruction.json."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from vmagent import schemas
from vmagent.monitor import instructions

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2**70),
    st.floats(allow_nan=True),
    st.sampled_from(["drain", "halt", "shutdown_at", "reboot", "", "x" * 1025]),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=2),
)
keys = st.sampled_from(["id", "action", "shutdown_at", "reason", "extra", "ID"])
documents = st.one_of(
    st.dictionaries(keys, values, max_size=5),
    st.fixed_dictionaries(
        {"id": st.integers(0, 10), "action": st.sampled_from(instructions.ACTIONS)},
        optional={"shutdown_at": st.floats(0, 2e9), "reason": st.text()},
    ),
    values,
)


def finite(doc):
    return not (
        isinstance(doc, dict)
        and isinstance(doc.get("shutdown_at"), float)
        and not math.isfinite(doc["shutdown_at"])
    )


@settings(max_examples=2000, deadline=None)
@given(documents)
def test_agrees_with_the_schema(doc):
    """Accepted exactly when the schema accepts it; a non-finite shutdown_at is refused in any case."""
    mine, schema = instructions.problems(doc), schemas.problems("instruction", doc)
    if finite(doc):
        assert (mine == []) == (schema == []), (doc, mine, schema)
    else:
        assert mine


def test_actions_match_the_schema():
    """The actions and fields the monitor obeys are exactly those the instruction schema allows."""
    instruction = schemas.get("instruction")
    assert tuple(instruction["properties"]["action"]["enum"]) == instructions.ACTIONS
    assert set(instruction["properties"]) == set(instructions.FIELDS)
    assert instruction["properties"]["reason"]["maxLength"] == 1024
