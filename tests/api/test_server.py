"""The listener ``twofa serve`` hands to its server processes: accepted connections must get TCP_NODELAY, or every
answer on a keep-alive connection waits for the client's delayed ACK (about 40 ms on Linux)."""

from __future__ import annotations

import asyncio
import socket

from api.server import ServerConfig


async def nodelay_of_accepted_connection(listener: socket.socket) -> int:
    """TCP_NODELAY of the server side of one connection accepted by asyncio on ``listener``, as uvicorn serves."""
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
    try:
        port = listener.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        value = await asyncio.wait_for(accepted, 5)
        writer.close()
        return value
    finally:
        server.close()
        await server.wait_closed()


def test_the_listener_for_several_processes_gets_connections_without_nagle() -> None:
    config = ServerConfig("cli.serve:make_app", factory=True, host="127.0.0.1", port=0, workers=2)
    listener = config.bind_socket()
    assert listener.proto == socket.IPPROTO_TCP
    assert listener.get_inheritable()  # the server processes inherit it
    assert asyncio.run(nodelay_of_accepted_connection(listener)) == 1
