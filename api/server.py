"""Serving the API with uvicorn, as ``twofa serve`` does: one process or a supervisor of several."""

from __future__ import annotations

import contextlib
import socket
import sys

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration, with a listening socket that asyncio recognises as TCP.

    With several server processes uvicorn binds the socket itself and leaves its protocol number at 0; the accepted
    connections inherit it, and asyncio turns on TCP_NODELAY only for sockets that report IPPROTO_TCP. Nagle's
    algorithm then holds every response on a keep-alive connection until the client's delayed ACK: about 40 ms a
    request on Linux (uvicorn issue #3149, open in 0.54). A single process is not affected: asyncio binds that
    socket from ``getaddrinfo``."""

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto != socket.IPPROTO_TCP:
            sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, sock.detach())
        return sock


def run_server(config: uvicorn.Config) -> None:
    """``uvicorn.run`` for an import string: one process, or a supervisor of ``config.workers`` processes. Ends
    quietly on Ctrl-C or SIGINT, as uvicorn does (the server re-raises the signal after its graceful shutdown)."""
    if config.workers > 1:
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
