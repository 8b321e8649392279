"""Response ends read from Envoy's gRPC access log entries (scorer/extproc/response_log.py)."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import address_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import wrappers_pb2

from scorer.extproc.response_log import response_end


def _entry(request_id: str = "", status: int | None = None, upstream: tuple[str, int] | None = None):
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.request.request_id = request_id
    if status is not None:
        entry.response.response_code.CopyFrom(wrappers_pb2.UInt32Value(value=status))
    if upstream is not None:
        socket = address_pb2.SocketAddress(address=upstream[0], port_value=upstream[1])
        entry.common_properties.upstream_remote_address.CopyFrom(address_pb2.Address(socket_address=socket))
    return entry


@pytest.mark.parametrize(
    ("entry", "end"),
    [
        (_entry("r1", 200, ("10.0.0.1", 8000)), ("r1", "10.0.0.1:8000", 200)),
        (_entry("r2", 503, ("fd00::1", 8000)), ("r2", "[fd00::1]:8000", 503)),
        (_entry("r3", None, None), ("r3", None, 0)),  # ended before response headers: status 0, nothing served
        (_entry("r4", 0, ("10.0.0.2", 8001)), ("r4", "10.0.0.2:8001", 0)),
        (_entry("", 200, ("10.0.0.1", 8000)), None),  # no x-request-id: nothing to match
    ],
)
def test_response_end(entry: accesslog_pb2.HTTPAccessLogEntry, end: tuple[str, str | None, int] | None):
    assert response_end(entry) == end
