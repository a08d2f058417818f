"""Heartbeat endpoints (entry point group ``vmagent.endpoints``): ``http``, ``vac``, ``log``.

An endpoint is a class with a ``name``, an ``options_schema`` (JSON Schema of its ``options`` in the
``monitor.endpoints`` list, with defaults), built with ``(config, options)``, offering:

- ``send(heartbeat, sample) -> list``: deliver one heartbeat body (vmagent/schemas/heartbeat.json;
  ``sample`` is the full sample it was made from) and return the raw instructions the endpoint
  answered. The monitor validates them; an endpoint never trusts or executes them itself.
- ``halting(decision)``: tell the endpoint the VM halts (``decision.policy``, ``.reason``,
  ``.vacuum_code``, ``.message``).
- optionally ``period``: a heartbeat period the endpoint asked for (None to keep the configured one).

Raise ``ManagerUnavailable`` (or any ``OSError``) for an outage: the monitor backs off, buffers and
summarises what was missed; ``ManagerRefused`` when the endpoint answered but refused.
"""
