"""Relay one guest connection (stdin/stdout, as QEMU's guestfwd cmd: gives it) to a host TCP port."""

from __future__ import annotations

import os
import selectors
import socket
import sys


def main(host: str, port: int) -> int:
    conn = socket.create_connection((host, port))
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(conn, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj == 0:
                data = os.read(0, 65536)
                if not data:
                    conn.shutdown(socket.SHUT_WR)
                    selector.unregister(0)
                    continue
                conn.sendall(data)
            else:
                data = conn.recv(65536)
                if not data:
                    return 0
                os.write(1, data)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
