"""Response ends from Envoy's gRPC access log service: the picker's in-flight release without a stream per request.

Why it exists: with the response observer (docs/picker-envoy.md §4) every request opens two ext_proc streams on the
picker, the routing one and the observer's, and most of the picker's CPU per request is gRPC's per-stream
machinery. Envoy's gRPC access logger (`envoy.access_loggers.http_grpc`, `EnvoyOptions.response_ends =
"access_log"`) instead sends one entry per finished request, batched (`buffer_flush_interval`) on one long-lived
stream per Envoy worker thread: the picker learns the same three facts (x-request-id, the response status, the
upstream actually used) and calls `response_complete` as the observer stream would, at most one flush interval
later. Entries of requests the picker did not route are ignored by the backend, as the observer's are.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from scorer.extproc.exchange import PickBackend

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


class ResponseLogServicer(als_pb2_grpc.AccessLogServiceServicer):
    """`envoy.service.accesslog.v3.AccessLogService`: each HTTP entry is one `response_complete`."""

    def __init__(self, backend: PickBackend):
        self.backend = backend

    async def StreamAccessLogs(
        self, request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage], context: grpc.aio.ServicerContext
    ) -> als_pb2.StreamAccessLogsResponse:
        async for message in request_iterator:
            for entry in message.http_logs.log_entry:
                end = response_end(entry)
                if end is None:
                    continue
                try:
                    self.backend.response_complete(end[0], end[1], end[2], None)
                except Exception:  # one bad entry must not end the stream of all the others
                    log.exception("response_complete failed", extra={"request_id": end[0]})
        return als_pb2.StreamAccessLogsResponse()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(self, server)
