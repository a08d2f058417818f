"""What a plugin of each entry point group must offer: one ``typing.Protocol`` per group.

Each Protocol describes an instance; ``INTERFACES`` adds what the entry point itself is called
with to make one (a class's constructor arguments). ``misfits(group, factory)`` checks a loaded
entry point structurally, as ``vmagent.plugins`` does for every plugin it hands out: the
Protocol's attributes present on the class, its methods present and callable with the Protocol's
arguments. Optional members (a command's ``defaults``, an endpoint's ``period``, a source's
``leased``) are documented beside each Protocol and not required.

This module imports nothing of vmagent: the types a plugin receives (the pilot's ``Context``, a
``Config``, the masonry's ``PoolView``, the monitor's ``Decision``) belong to the subsystems above it
and appear here as ``Any``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Protocol, Tuple


class PilotCommand(Protocol):
    """``vmagent.pilot_commands``: built with ``()``; ``run`` returns facts or a ``Result``.

    Optional: ``defaults`` (timeout, retries, backoff, on_failure, once_per_instance).
    """

    name: str
    options_schema: Mapping[str, Any]

    def run(self, ctx: Any) -> Any: ...


class Endpoint(Protocol):
    """``vmagent.endpoints``: built with ``(config, options)``; ``send`` returns raw instructions.

    Optional: ``period``, a heartbeat period the endpoint asked for (None keeps the configured one).
    """

    name: str
    options_schema: Mapping[str, Any]

    def send(self, heartbeat: Dict[str, Any], sample: Mapping[str, Any]) -> List[Any]: ...

    def halting(self, decision: Any) -> None: ...


class PayloadSource(Protocol):
    """``vmagent.payload_sources``: built with ``(config)``; offers validated payloads.

    Optional: ``leased`` (what ``offer`` answers already belongs to this VM), ``exhausted``.
    """

    name: str

    def offer(self, capacity: Dict[str, Any]) -> List[Dict[str, Any]]: ...

    def claim(self, payload: Dict[str, Any]) -> bool: ...

    def report(self, result: Dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class MasonryPolicy(Protocol):
    """``vmagent.masonry_policies``: built with ``()``; ``decide`` names the payloads to start now."""

    name: str

    def decide(self, view: Any) -> List[str]: ...


class HaltAction(Protocol):
    """``vmagent.halt_actions``: built with ``(config)``; called once with the halting decision."""

    name: str

    def __call__(self, decision: Any) -> None: ...


@dataclass(frozen=True)
class Interface:
    """A group's Protocol, what it is called (in messages) and its constructor's arguments."""

    protocol: type
    noun: str
    built_with: Tuple[str, ...]


INTERFACES: Dict[str, Interface] = {
    "vmagent.pilot_commands": Interface(PilotCommand, "pilot command", ()),
    "vmagent.endpoints": Interface(Endpoint, "endpoint", ("config", "options")),
    "vmagent.payload_sources": Interface(PayloadSource, "payload source", ("config",)),
    "vmagent.masonry_policies": Interface(MasonryPolicy, "masonry policy", ()),
    "vmagent.halt_actions": Interface(HaltAction, "halt action", ("config",)),
}


def members(protocol: type) -> Tuple[List[str], Dict[str, int]]:
    """The attributes a Protocol declares and its methods with their argument counts (no self)."""
    attributes = list(getattr(protocol, "__annotations__", {}))
    methods = {}
    for key, value in vars(protocol).items():
        if inspect.isfunction(value) and (key == "__call__" or not key.startswith("_")):
            methods[key] = len(inspect.signature(value).parameters) - 1
    return attributes, methods


def misfits(group: str, factory: Any) -> List[str]:
    """What ``factory`` (the object an entry point of ``group`` names) lacks, one phrase each."""
    interface = INTERFACES.get(group)
    if interface is None:
        return []
    found = []
    if not callable(factory):
        return [f"is a {type(factory).__name__}, not a class"]
    if not _accepts(factory, len(interface.built_with)):
        found.append(f"cannot be built with ({', '.join(interface.built_with)})")
    attributes, methods = members(interface.protocol)
    for attribute in attributes:
        if not hasattr(factory, attribute):
            found.append(f"no attribute {attribute!r}")
    for method, count in methods.items():
        function = inspect.getattr_static(factory, method, None)
        if function is None or not callable(getattr(factory, method, None)):
            found.append(f"no method {method}()")
        elif not _accepts(_bound(function), count):
            found.append(f"{method}() does not take {count} argument{'s' * (count != 1)}")
    return found


def _bound(function: Any) -> Any:
    """The callable as an instance would see it: without ``self`` unless it is static."""
    if isinstance(function, staticmethod):
        return function.__func__
    if isinstance(function, classmethod):
        return function.__func__.__get__(object)
    return function.__get__(object()) if inspect.isfunction(function) else function


def _accepts(function: Any, count: int) -> bool:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature: give it the benefit
        return True
    try:
        signature.bind(*[None] * count)
    except TypeError:
        return False
    return True
