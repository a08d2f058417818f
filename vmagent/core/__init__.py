"""The VM-side core: what every subsystem inside the VM shares and none of them owns.

Atomic file writes (``files``), the one instance id (``instance``), the on-disk layout
(``layout``) and drain requests (``drain``). The core imports no subsystem (pilot, pool_ce,
monitor, mjf, client) and nothing of the manager's server; every subsystem may import it.
"""
