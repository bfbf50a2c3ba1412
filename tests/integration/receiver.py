"""A real HTTP/1.1 server on 127.0.0.1 for tests: it records every request and answers as scripted.

Real sockets (trio TCP + h11, the parser httpx itself uses), so what a test sees is what a
webhook endpoint on the network would see, including keep-alive, slow answers and resets.
Time inside it is trio time, so under `autojump_clock` a 30 s delay costs nothing.

    from receiver import Receiver, Reply

    async with Receiver.start() as receiver:
        receiver.script([Reply(status=500), Reply(status=429, headers={"retry-after": "7"})])
        ...  # POST to receiver.url
        requests = await receiver.wait_for(3)  # the third one got the default 200

`script` queues replies consumed one per request in arrival order; once the queue is empty
every request gets `default`. A `Reply` can delay its answer (`delay_s`) or, instead of
answering, reset the connection (`drop=True`, RST via SO_LINGER 0) after reading the request.
"""

from __future__ import annotations

import json
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h11
import trio

_MAX_CHUNK = 65536


@dataclass(frozen=True, kw_only=True)
class Reply:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0
    drop: bool = False


@dataclass(frozen=True, kw_only=True)
class Recorded:
    """One request as received; header names lower-cased, repeated headers joined by ", "."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    at: float  # trio.current_time() when the whole request had arrived

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    def __init__(self, port: int, *, default: Reply, path: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}{path}"
        self.default = default
        self.requests: list[Recorded] = []
        self.keep_requests = True  # False for benchmarks: count, do not hold every body
        self.request_count = 0
        self.connections = 0
        self._script: deque[Reply] = deque()
        self._arrived = trio.Event()

    @classmethod
    @asynccontextmanager
    async def start(
        cls, *, default: Reply = Reply(), path: str = "/hook"
    ) -> AsyncIterator[Receiver]:
        """Listen on an ephemeral port until the block ends; open connections are then cut."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        receiver = cls(port, default=default, path=path)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.serve_listeners, receiver._serve, listeners))
            try:
                yield receiver
            finally:
                nursery.cancel_scope.cancel()

    def script(self, replies: Iterable[Reply | int]) -> None:
        """Queue replies (a bare int is a status) for the next requests, in order."""
        for reply in replies:
            self._script.append(Reply(status=reply) if isinstance(reply, int) else reply)

    async def wait_for(self, count: int, *, limit_s: float = 30.0) -> list[Recorded]:
        """Block until at least `count` requests have arrived; returns all of them.

        Raises trio.TooSlowError after `limit_s` (trio time), so a request that never comes
        fails the test instead of hanging it.
        """
        with trio.fail_after(limit_s):
            while len(self.requests) < count:
                await self._arrived.wait()
        return list(self.requests)

    def _next_reply(self) -> Reply:
        return self._script.popleft() if self._script else self.default

    def _record(self, request: h11.Request, body: bytes) -> None:
        self.request_count += 1
        if not self.keep_requests:
            return
        headers: dict[str, str] = {}
        for name, value in request.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.requests.append(
            Recorded(
                method=request.method.decode("ascii"),
                path=request.target.decode("latin-1"),
                headers=headers,
                body=body,
                at=trio.current_time(),
            )
        )
        self._arrived.set()
        self._arrived = trio.Event()

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                received = await _read_request(conn, stream)
                if received is None:
                    return
                self._record(*received)
                reply = self._next_reply()
                if reply.delay_s:
                    await trio.sleep(reply.delay_s)
                if reply.drop:
                    stream.socket.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    return
                await _send_reply(conn, stream, reply)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await trio.aclose_forcefully(stream)


async def _read_request(
    conn: h11.Connection, stream: trio.SocketStream
) -> tuple[h11.Request, bytes] | None:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(_MAX_CHUNK))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _send_reply(conn: h11.Connection, stream: trio.SocketStream, reply: Reply) -> None:
    headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers.items()
    ]
    headers.append((b"content-length", str(len(reply.body)).encode("ascii")))
    events: list[h11.Event] = [h11.Response(status_code=reply.status, headers=headers)]
    if reply.body:
        events.append(h11.Data(data=reply.body))
    events.append(h11.EndOfMessage())
    await stream.send_all(b"".join(conn.send(event) or b"" for event in events))
