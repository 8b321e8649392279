"""The picker's gRPC server: grpclib's HTTP/2 and gRPC framing on the picker's own event loop.

Why it exists: under grpc.aio every message in or out of a stream crossed grpc's poller thread and came back to the
asyncio loop; on a busy machine that hop was most of the picker's time per request (6.4 ms at p50, against 2.6 ms
with a grpclib prototype; docs/picker-envoy.md §3). grpclib (pure asyncio, h2) runs on the loop itself. Its
`Server` lacks what the picker needs, and this module adds it, as the one place that knows grpclib's internals
(pinned to 0.4.9 in pyproject.toml):

- a size limit per message, checked on the 5-byte gRPC prefix before the message is read (`receive`): beyond it
  the call ends RESOURCE_EXHAUSTED, as grpcio's `max_receive_message_length` did;
- HTTP/2 settings fit for Envoy, which multiplexes every ext_proc stream of a worker thread (two per request, the
  response observer's as long as the response) on one connection: h2's default of 100 concurrent streams would
  queue requests in Envoy (and a burst over it before the settings are acknowledged would kill the connection);
- a graceful stop: listening stops, each connection gets a GOAWAY (new streams are refused), open streams have
  `grace` seconds to end, then they are cancelled and the connections closed;
- binding: SO_REUSEPORT only when asked (the sibling workers of `--workers`), so a taken port is an error, and
  `::` listens on IPv4 too, as grpcio did.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message
from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec, ProtoStatusDetailsCodec
from grpclib.events import _DispatchServerEvents
from grpclib.exceptions import GRPCError
from grpclib.protocol import AbstractHandler, Connection, EventsProcessor, H2Protocol
from grpclib.protocol import Stream as H2Stream
from grpclib.server import Stream, request_handler
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

DEFAULT_MAX_MESSAGE = 4 << 20  # gRPC's default receive limit: health checks, access-log batches
MAX_CONCURRENT_STREAMS = 1 << 16  # per connection; h2's default (100) is below what one Envoy worker keeps open
STREAM_WINDOW = 4 << 20  # bytes a client may send on one stream before the picker reads them (grpclib's default)
CONNECTION_WINDOW = 16 << 20  # shared by all the streams of a connection
MAX_HEADER_LIST_SIZE = 1 << 16  # h2's default, advertised
_PREFIX = struct.Struct(">?I")  # gRPC message prefix: compressed flag, length
M = TypeVar("M", bound=Message)


class Servable(Protocol):
    """A grpclib service: method paths to `grpclib.const.Handler`s (what grpclib's generated bases provide)."""

    def __mapping__(self) -> dict[str, Any]: ...


async def receive(stream: Stream[Any, Any], limit: int) -> bytes | None:
    """The next message of `stream`, undecoded, or None when the client has ended its side.

    A message announced over `limit` bytes ends the call with RESOURCE_EXHAUSTED before any of it is read (grpclib
    itself reads any size); the caller decodes, so a message that does not decode is the caller's to answer.
    grpclib 0.4.9 has no public way to read the raw bytes: `Stream._stream` is its HTTP/2 stream.
    """
    h2_stream: H2Stream = stream._stream
    try:
        prefix = await h2_stream.recv_data(_PREFIX.size)
        if not prefix:
            return None
        compressed, length = _PREFIX.unpack(prefix)
        if compressed:
            raise GRPCError(Status.UNIMPLEMENTED, "compressed messages are not supported")
        if length > limit:
            raise GRPCError(Status.RESOURCE_EXHAUSTED, f"message of {length} bytes is over the limit of {limit}")
        return await h2_stream.recv_data(length)
    except AssertionError:  # grpclib's buffer: the client ended its side inside a message
        raise GRPCError(Status.INTERNAL, "the stream ended inside a message") from None


async def receive_one(stream: Stream[Any, Any], kind: type[M], limit: int = DEFAULT_MAX_MESSAGE) -> M:
    """The request of a unary call, decoded; INVALID_ARGUMENT if it is missing or does not decode."""
    data = await receive(stream, limit)
    if data is None:
        raise GRPCError(Status.INVALID_ARGUMENT, "no request message")
    try:
        return kind.FromString(data)
    except Exception as exc:  # DecodeError, or a string field that is not UTF-8
        raise GRPCError(Status.INVALID_ARGUMENT, f"malformed {kind.DESCRIPTOR.full_name}: {exc}") from None


class _Streams(AbstractHandler):
    """The gRPC calls of one connection: one task each, owned by the server."""

    def __init__(self, server: GrpcServer):
        self.server = server
        self.tasks: dict[H2Stream, asyncio.Task[None]] = {}
        self.protocol: _Protocol | None = None

    def accept(self, stream: H2Stream, headers: list[tuple[str, str]], release_stream: Callable[[], Any]) -> None:
        server = self.server
        if server.stopping:  # the GOAWAY is on its way: a stream the client opened before it arrived is refused
            if stream.closable:
                stream.reset_nowait(ErrorCodes.REFUSED_STREAM)
            release_stream()
            return
        call = request_handler(
            server.mapping, stream, headers, server.codec, server.status_codec, server.dispatch, release_stream
        )
        task = asyncio.get_running_loop().create_task(call)
        self.tasks[stream] = task
        server.calls.add(task)

        def ended(done: asyncio.Task[None]) -> None:
            self.tasks.pop(stream, None)
            server.calls.discard(done)

        task.add_done_callback(ended)

    def cancel(self, stream: H2Stream) -> None:  # RST_STREAM from the client
        task = self.tasks.pop(stream, None)
        if task is not None:
            task.cancel()

    def close(self) -> None:  # the connection is gone
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()
        self.server.connections.discard(self)


class _Protocol(H2Protocol):
    """One HTTP/2 connection; known to the server from its start (after the TLS handshake) to its loss."""

    def __init__(self, streams: _Streams, config: Configuration, h2_config: H2Configuration):
        super().__init__(streams, config, h2_config)
        self.streams = streams
        streams.protocol = self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """grpclib's own start of a connection, with the picker's settings in the first SETTINGS frame.

        grpclib 0.4.9 makes the h2 connection inside `connection_made`; h2 starts at 100 concurrent streams and
        a later SETTINGS frame applies only once acknowledged, so the settings are put in place before the first.
        """
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        h2 = H2Connection(config=self.h2_config)
        h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
                SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            },
        )
        h2.initiate_connection()
        h2.increment_flow_control_window(CONNECTION_WINDOW - h2.inbound_flow_control_window)
        self.transport = transport
        self.connection = Connection(h2, transport, config=self.config)  # type: ignore[arg-type]
        self.connection.flush()
        self.connection.initialize()
        self.processor = EventsProcessor(self.handler, self.connection)
        self.h2 = h2
        if self.streams.server.stopping:  # accepted before the stop, its TLS handshake done after it
            transport.close()
            return
        self.streams.server.connections.add(self.streams)

    def go_away(self) -> None:
        """Tell the client to open no more streams here; the open ones carry on.

        Written as a raw frame: h2 closes its state machine on a GOAWAY it sends, after which the open streams'
        frames would be protocol errors.
        """
        if not self.transport.is_closing():
            frame = GoAwayFrame(stream_id=0, last_stream_id=self.h2.highest_inbound_stream_id)
            self.transport.write(frame.serialize())  # type: ignore[attr-defined]


class GrpcServer:
    """grpclib services on one port. `start` binds and listens; `stop(grace)` ends it gracefully."""

    def __init__(self, services: Sequence[Servable]):
        self.mapping: dict[str, Any] = {}
        for service in services:
            self.mapping.update(service.__mapping__())
        self.codec = ProtoCodec()
        self.status_codec = ProtoStatusDetailsCodec()
        self.dispatch = _DispatchServerEvents()  # grpclib's event hooks (none registered): its handler needs one
        # grpclib's own h2 settings: headers as text, not validated (grpclib checks what gRPC needs)
        self.h2_config = H2Configuration(
            client_side=False,
            header_encoding="ascii",
            validate_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_inbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.config = Configuration().__for_server__()
        self.connections: set[_Streams] = set()
        self.calls: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.port = 0
        self._server: asyncio.Server | None = None

    def _connection(self) -> _Protocol:
        return _Protocol(_Streams(self), self.config, self.h2_config)

    async def start(self, host: str, port: int, *, tls: ssl.SSLContext | None = None, reuse_port: bool = False) -> int:
        """Listen on host:port (0: a free port); returns the bound port. Raises OSError if it cannot bind."""
        sock = bind(host, port, reuse_port)
        try:
            self._server = await asyncio.get_running_loop().create_server(self._connection, sock=sock, ssl=tls)
        except BaseException:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        return self.port

    async def stop(self, grace: float | None) -> None:
        """Stop listening and refuse new streams; wait up to `grace` seconds (None: none) for the open calls, cancel
        what is left, close the connections. Safe to call twice."""
        if self._server is None:
            return
        self.stopping = True
        self._server.close()
        for streams in list(self.connections):
            if streams.protocol is not None:
                streams.protocol.go_away()
        if self.calls and grace:
            await asyncio.wait(set(self.calls), timeout=grace)
        for task in list(self.calls):
            task.cancel()
        if self.calls:
            await asyncio.wait(set(self.calls), timeout=5.0)
        for streams in list(self.connections):
            if streams.protocol is not None:
                with contextlib.suppress(Exception):
                    streams.protocol.transport.close()
        self.connections.clear()
        await self._server.wait_closed()
        self._server = None


def bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A bound stream socket for host:port. Without `reuse_port`, a port something else listens on is an error.

    An IPv6 wildcard (`::`) also takes IPv4 connections, as grpcio's `[::]:port` did.
    """
    host = host.strip("[]")
    family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT, not listeners: a restart rebinds
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock
