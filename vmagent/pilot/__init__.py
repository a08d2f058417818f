"""Pilot 2.0: an ordered pipeline of small commands that turns a booted VM into a working node.

What a pilot command plugin needs, also outside this package (``vmagent.mjf``'s ``setup-mjf``,
``vmagent.pool_ce``'s ``start-pool``): ``Context`` (what it sees), ``Result`` (what it returns)
and ``Actions`` (the record of its effects). The runner is not imported here.
"""

from __future__ import annotations

from .command import Actions, Context, Result

__all__ = ["Actions", "Context", "Result"]
