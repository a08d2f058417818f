"""Heartbeat endpoints (entry point group ``vmagent.endpoints``).

An endpoint is a class built with ``(config, options)`` offering ``send(heartbeat) -> list`` (the
raw instructions the endpoint answered, validated by the monitor, never trusted) and
``halting(decision)``. Raise ``ManagerUnavailable`` for an outage: the monitor backs off and
buffers.
"""
