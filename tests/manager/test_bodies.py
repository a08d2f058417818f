"""Request body validation: the fast path never accepts what jsonschema refuses."""

from __future__ import annotations

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmagent.manager import bodies

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=False, width=32),
    st.sampled_from(["", "running", "booting", "i-1", "x" * 200, "bad id!"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(["running", "ids", "free_cores", "outcome", "x"]), inner, max_size=3
        ),
    ),
    max_leaves=8,
)
NAMES = [
    "heartbeat",
    "payload",
    "result",
    "instruction_request",
    "claim",
    "register",
    "halting",
    "enrolment",
]


def _documents(name):
    keys = sorted(bodies.schema(name).get("properties", {})) + ["unknown"]
    return st.dictionaries(st.sampled_from(keys), VALUES, max_size=len(keys))


@settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
@given(data=st.data())
def test_fast_check_agrees_with_jsonschema(data):
    """For random documents of every body, the compiled check accepts exactly what jsonschema accepts."""
    for name in NAMES:
        doc = data.draw(_documents(name))
        slow = jsonschema.Draft202012Validator(bodies.schema(name)).is_valid(doc)
        assert (bodies.problems(name, doc) == []) == slow, (name, doc)


def test_booleans_are_not_integers_and_problems_name_the_key():
    """``true`` for an integer is refused, and the explanation names the body and the key."""
    found = bodies.problems(
        "heartbeat", {"instance_id": "i", "seq": True, "time": 1, "status": "running"}
    )
    assert found == [("seq", "True is not of type 'integer'")]
    assert (
        bodies.explain("heartbeat", found)
        == "invalid heartbeat: seq: True is not of type 'integer'"
    )


def test_shutdown_at_instruction_requires_its_time():
    """An operator's shutdown_at without a time is refused, as the instruction schema's if/then says."""
    assert bodies.problems("instruction_request", {"action": "shutdown_at"})
    assert not bodies.problems("instruction_request", {"action": "shutdown_at", "shutdown_at": 5})
