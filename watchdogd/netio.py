"""A TCP connection within one deadline, for the net probes and the notification transports alike."""

from __future__ import annotations

import socket
import time


def connect(host: str, port: int, deadline: float) -> socket.socket:
    """A connected TCP socket, every address of ``host`` tried in turn within one ``deadline`` (monotonic).

    ``socket.create_connection`` gives *each* address the full timeout, so
    ``localhost`` (``::1`` then ``127.0.0.1``) could take twice the probe's
    timeout to fail. (Name resolution itself cannot be bounded here; the
    engine's per-rule timeout covers a resolver that hangs.)
    """
    error: OSError | None = None
    for family, kind, proto, _name, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(remaining)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error if error is not None else TimeoutError("timed out")
