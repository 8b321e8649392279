"""Response ends from Envoy's gRPC access log service: the picker's in-flight release without a stream per request.

Why it exists: with the response observer (docs/picker-envoy.md §4) every request opens two ext_proc streams on the
picker, the routing one and the observer's, and most of the picker's CPU per request is gRPC's per-stream
machinery. Envoy's gRPC access logger (`envoy.access_loggers.http_grpc`, `EnvoyOptions.response_ends =
"access_log"`) instead sends one entry per finished request, batched (`buffer_flush_interval`) on one long-lived
stream per Envoy worker thread: the picker learns the same three facts (x-request-id, the response status, the
upstream actually used) and calls `response_complete` as the observer stream would, at most one flush interval
later. Entries of requests the picker did not route are ignored by the backend, as the observer's are. Served on
the picker's grpclib server (`scorer.extproc.grpcserver`) beside ext_proc.
"""

from __future__ import annotations

import logging
from typing import Any

from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from scorer.extproc.exchange import PickBackend
from scorer.extproc.grpcserver import DEFAULT_MAX_MESSAGE, receive

log = logging.getLogger("autonomic.extproc")


def response_end(entry: accesslog_pb2.HTTPAccessLogEntry) -> tuple[str, str | None, int] | None:
    """(request id, served `ip:port` or None, status; 0 when no response started) of one entry; None without an id."""
    request_id = entry.request.request_id
    if not request_id:
        return None
    status = entry.response.response_code.value if entry.response.HasField("response_code") else 0
    served = None
    upstream = entry.common_properties.upstream_remote_address
    if upstream.HasField("socket_address") and upstream.socket_address.address:
        address = upstream.socket_address.address
        host = f"[{address}]" if ":" in address else address
        served = f"{host}:{upstream.socket_address.port_value}"
    return request_id, served, status


class ResponseLogServicer:
    """`envoy.service.accesslog.v3.AccessLogService`: each HTTP entry is one `response_complete`."""

    PATH = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"

    def __init__(self, backend: PickBackend, max_message: int = DEFAULT_MAX_MESSAGE):
        self.backend = backend
        self.max_message = max_message

    def __mapping__(self) -> dict[str, Handler]:
        request, reply = als_pb2.StreamAccessLogsMessage, als_pb2.StreamAccessLogsResponse
        return {self.PATH: Handler(self.stream_access_logs, Cardinality.STREAM_UNARY, request, reply)}

    async def stream_access_logs(self, stream: Stream[Any, Any]) -> None:
        while (data := await receive(stream, self.max_message)) is not None:
            try:
                message = als_pb2.StreamAccessLogsMessage.FromString(data)
            except Exception as exc:  # DecodeError: not an access-log batch
                raise GRPCError(Status.INVALID_ARGUMENT, f"malformed StreamAccessLogsMessage: {exc}") from None
            for entry in message.http_logs.log_entry:
                end = response_end(entry)
                if end is None:
                    continue
                try:
                    self.backend.response_complete(end[0], end[1], end[2], None)
                except Exception:  # one bad entry must not end the stream of all the others
                    log.exception("response_complete failed", extra={"request_id": end[0]})
        await stream.send_message(als_pb2.StreamAccessLogsResponse())
