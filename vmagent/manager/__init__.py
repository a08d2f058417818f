"""vmagent.manager: the reference central manager (``pip install vmagent[manager]``).

Kept free of imports: ``vmagent.client.manager`` runs inside VMs on Python 3.9 with ``requests``
only. The server side: ``app`` (ASGI app), ``routes_vm`` and ``routes_admin`` (API v1),
``registry`` (enrolment, registration, VM credentials), ``fleet`` (the VMs' state machine,
``states``, instructions, halting), ``heartbeats``, ``inventory`` (VM table), ``queue`` (payloads),
``accounting``, ``sweeper``, ``db`` (tables), ``auth`` (tokens), ``bodies`` (request schemas),
``pki`` and ``server`` (init, serve). Its command line: ``cli`` (init, serve) and ``operations``
(the operators' commands over the API, laid out by ``tables``).
"""
