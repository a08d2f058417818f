"""vmagent.manager: the reference central manager (``pip install vmagent[manager]``).

Kept free of imports: ``vmagent.client.manager`` runs inside VMs on Python 3.9 with ``requests``
only. The server side: ``app`` (ASGI app), ``routes_vm`` and ``routes_admin`` (API v1), ``fleet``
(VM registry and state machine, ``states``), ``inventory`` (VM table), ``queue`` (payloads),
``accounting``, ``sweeper``, ``db`` (tables), ``auth`` (tokens), ``bodies`` (request schemas),
``pki`` and ``server`` (init, serve).
"""
