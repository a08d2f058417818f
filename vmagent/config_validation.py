"""Documents checked against a JSON Schema: ``(dotted.path, message)`` problems, then defaults.

``jsonschema`` is imported only inside ``validation_problems``: a long-lived process that never
validates (the monitor, once its configuration is checked) never loads it.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any, List, Mapping, Tuple

if TYPE_CHECKING:
    import jsonschema

Problem = Tuple[str, str]


def validation_problems(
    schema_: Mapping[str, Any], doc: Any, prefix: str = ""
) -> List[Tuple[str, str]]:
    """``(dotted.path, message)`` for everything in ``doc`` that ``schema_`` rejects."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema_)
    found = []
    for error in validator.iter_errors(doc):
        found.extend(_explain(error, prefix))
    found.extend(non_finite(doc, prefix))
    return sorted(set(found))


def non_finite(doc: Any, prefix: str = "") -> List[Tuple[str, str]]:
    """``(dotted.path, message)`` for every NaN or infinity in ``doc``: JSON Schema's numbers accept them."""
    if isinstance(doc, float) and not math.isfinite(doc):
        return [(prefix, "must be a finite number")]
    if isinstance(doc, Mapping):
        items: Any = doc.items()
    elif isinstance(doc, (list, tuple)):
        items = enumerate(doc)
    else:
        return []
    found = []
    for key, value in items:
        found.extend(non_finite(value, _join(prefix, str(key))))
    return found


def _explain(error: jsonschema.ValidationError, prefix: str) -> List[Tuple[str, str]]:
    path = ".".join([prefix] * bool(prefix) + [str(p) for p in error.absolute_path])
    if error.validator == "oneOf" and error.context:
        # Report the branch that got furthest instead of "is not valid under any of the given schemas".
        best = max(error.context, key=lambda e: len(e.absolute_path))
        return _explain(best, prefix)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return [
            (_join(path, k), f"unknown key; allowed: {', '.join(allowed) or '(none)'}")
            for k in extra
        ]
    if error.validator == "enum":
        return [
            (
                path,
                f"{error.instance!r} is not allowed; use one of: {', '.join(map(str, error.validator_value))}",
            )
        ]
    return [(path, error.message)]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def apply_defaults(schema_: Mapping[str, Any], doc: Any) -> None:
    """Fill in schema ``default`` values for missing object keys, recursively, in place."""
    if not isinstance(doc, dict):
        return
    for key, sub in schema_.get("properties", {}).items():
        if key not in doc and "default" in sub:
            doc[key] = copy.deepcopy(sub["default"])
        if key in doc:
            apply_defaults(sub, doc[key])
            items = sub.get("items")
            if isinstance(items, dict) and isinstance(doc[key], list):
                for item in doc[key]:
                    apply_defaults(items, item)
    extra = schema_.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in doc.items():
            if key not in schema_.get("properties", {}):
                apply_defaults(extra, value)
