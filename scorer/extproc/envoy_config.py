"""Renders the Envoy bootstrap that puts the picker in front of the model servers (local runs, tests, demo, bench).

Why it exists: tests and benchmarks start the same routing chain with different ports and failure modes, and
`deploy/local/*.yaml` keeps reviewed renders of it. HTTP filters, in order:

1. `header_to_metadata` (request): strips a client-supplied `x-gateway-destination-endpoint`; with
   `subset_from_header` it copies a client header into `envoy.lb.subset_hint` (a gateway would set that itself);
2. `ext_proc` -> the picker (headers SEND, bodies FULL_DUPLEX_STREAMED or BUFFERED, trailers SEND as Envoy 1.40
   requires with full duplex), forwarding `envoy.lb*` metadata and accepting `envoy.lb` back;
3. `header_to_metadata` (response, `original_dst` only): the served endpoint, set by the route from
   `%UPSTREAM_REMOTE_ADDRESS%`, moved into `envoy.lb` metadata where the picker reads it;
4. the router.

`routing` chooses how the decision is honoured (both measured in docs/picker-envoy.md):
`override_host` (default) — the pool cluster uses Envoy's OverrideHost policy, which takes `ip:port[,ip:port...]`
from the metadata or header, retries down the list, reports the host used and falls back to round robin without
a decision (fail-open); `original_dst` — GIE's test setup, an ORIGINAL_DST cluster dialling the header, which
takes ONE address only, plus a route without the header to the pool. `picker_port=None`: plain round robin.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from scorer.extproc.protocol import (
    DESTINATION_KEY,
    LB_NAMESPACE,
    OBSERVER_KEY,
    OBSERVER_NAMESPACE,
    SERVED_KEY,
    SUBSET_KEY,
    SUBSET_NAMESPACE,
)

_TYPE = "@type"
_T = "type.googleapis.com/envoy.extensions."


@dataclass(frozen=True)
class EnvoyOptions:
    listen_port: int = 8081
    admin_port: int = 19000
    picker_port: int | None = 9002  # None: plain round-robin baseline without ext_proc
    picker_host: str = "127.0.0.1"
    listen_host: str = "127.0.0.1"
    pool: Sequence[str] = ()  # ip:port of every model server
    routing: Literal["override_host", "original_dst"] = "override_host"
    failure_mode_allow: bool = False
    message_timeout_s: float = 30.0
    body_mode: Literal["FULL_DUPLEX_STREAMED", "BUFFERED"] = "FULL_DUPLEX_STREAMED"
    retries: int = 2  # override_host: further attempts go down the picker's list (connect failures, resets)
    subset_from_header: bool = False
    route_timeout_s: int = 86400
    stream_idle_timeout_s: float | None = None  # Envoy's default is 300 s; it is what ends a hung picker's requests
    access_log: bool = False
    # the response body through the picker too (FULL_DUPLEX_STREAMED with the request's, else STREAMED): only to read
    # token usage, which no shipped plugin uses, and every response chunk then waits for the picker (on a streamed
    # answer, one round trip per token). Off: the picker sees the response headers (status, served endpoint) and
    # the stream's end, which Envoy sends when the HTTP stream ends, and that is all the picker needs
    observe_response_body: bool = False
    # how the picker learns that a response ended (without observe_response_body): "ext_proc", a second ext_proc
    # stream per request in observability mode; "access_log", Envoy's gRPC access log to the picker (entries batched
    # every access_log_flush_s on one stream per Envoy worker: half the picker's streams, ends up to that much later)
    response_ends: Literal["ext_proc", "access_log"] = "ext_proc"
    access_log_flush_s: float = 0.01
    # a JSON line per request with Envoy's own account of the ext_proc stream (per phase: latency waiting for the
    # picker, calls, gRPC status; `ExtProcLoggingInfo`) keyed by x-request-id, and how long the request took from its
    # first byte to being sent upstream (also without a picker): where the router's time goes
    extproc_log_path: str | None = None
    # ext_proc over TLS (the in-cluster picker serves TLS): without a CA the picker's certificate is not verified,
    # as GIE's gateways do with the EPP's self-signed one; a picker_host that is not an IP is resolved (STRICT_DNS)
    picker_tls: bool = False
    picker_ca_file: str | None = None
    picker_sni: str | None = None
    # consecutive health-check timeouts or connection failures before Envoy stops asking the picker (NOT_SERVING
    # counts at once): above 1 so that a picker late by a second under CPU starvation keeps routing
    picker_unhealthy_threshold: int = 3
    # the picker's plain-HTTP port with `/readyz` (`autonomic picker --metrics-port`): Envoy health-checks that
    # instead of gRPC health on the ext_proc port. Envoy's gRPC health check sends its timeout as `grpc-timeout`, and
    # the picker's gRPC core answers DEADLINE_EXCEEDED when a starved picker is late; Envoy takes such an answer
    # for an explicit failure and ejects at once, whatever `picker_unhealthy_threshold` says. Over HTTP a late
    # answer is a timeout (counted against the threshold) and a 503 still ejects at once. None: gRPC health.
    picker_readyz_port: int | None = None
    # gRPC health (service envoy.service.ext_proc.v3.ExternalProcessor) on this port instead of the ext_proc port,
    # over a plain socket: for an ext_proc server that answers health elsewhere, as the GIE EPP does on its
    # --grpc-health-port (SERVING once its endpoint pool has synced). Exclusive with picker_readyz_port.
    picker_grpc_health_port: int | None = None
    # without a picker: Envoy's own policy over the pool (the routing benchmark's random and least-queue baselines)
    pool_lb_policy: Literal["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST"] = "ROUND_ROBIN"
    # active-active: further picker replicas on picker_host besides picker_port, each (ext_proc port, health port);
    # the health port is checked as picker_readyz_port / picker_grpc_health_port say (None: the ext_proc port).
    # With several replicas Envoy spreads ext_proc streams over the healthy ones, ejects a replica at its first
    # refused connection (outlier detection) and retries a stream that could not connect on another replica
    extra_pickers: Sequence[tuple[int, int | None]] = ()
    # the same settings for a picker_host that resolves to several replicas (a headless Service; STRICT_DNS)
    picker_replicas: bool = False
    # attempts after the first for an ext_proc stream whose connection failed (only with several replicas)
    picker_stream_retries: int = 2
    # a picker with `--workers N` (N > 1) behind one address: the kernel spreads connections, not streams, over the
    # workers (SO_REUSEPORT), and Envoy multiplexes every ext_proc stream of a worker thread on one HTTP/2 connection.
    # So Envoy is made to open several (at most PICKER_STREAMS_PER_CONNECTION streams each) and to replace each after
    # PICKER_CONNECTION_STREAMS streams (re-spread), and a stream whose connection a dying worker reset is retried
    picker_workers: int = 1


PICKER_STREAMS_PER_CONNECTION = 4  # concurrent ext_proc streams on one connection to a picker with workers
PICKER_CONNECTION_STREAMS = 200  # streams after which such a connection is replaced (spread again by the kernel)


def _address(hostport: str) -> dict[str, Any]:
    host, _, port = hostport.rpartition(":")
    return {"address": {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}}


def _typed(name: str, type_url: str, **config: Any) -> dict[str, Any]:
    return {"name": name, "typed_config": {_TYPE: _T + type_url, **config}}


def _lb_policy(name: str, type_url: str, **config: Any) -> dict[str, Any]:
    return {"policies": [{"typed_extension_config": _typed(name, type_url, **config)}]}


def _metadata_key(key: str) -> dict[str, Any]:
    return {"key": LB_NAMESPACE, "path": [{"key": key}]}


_PLAIN_MATCH = {"autonomic.health_check": "plain"}


def _cluster(
    name: str, endpoints: Sequence[str], health_check_ports: Sequence[int | None] = (), **extra: Any
) -> dict[str, Any]:
    ports = list(health_check_ports) or [None] * len(endpoints)
    lb_endpoints = [
        {"endpoint": {**_address(e), **({} if p is None else {"health_check_config": {"port_value": p}})}}
        for e, p in zip(endpoints, ports, strict=True)
    ]
    assignment = {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]}
    return {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": assignment, **extra}


def _pool_cluster(opts: EnvoyOptions) -> dict[str, Any]:
    if opts.picker_port is None or opts.routing == "original_dst":
        return _cluster("pool", opts.pool, lb_policy=opts.pool_lb_policy if opts.picker_port is None else "ROUND_ROBIN")
    round_robin = _lb_policy(
        "envoy.load_balancing_policies.round_robin", "load_balancing_policies.round_robin.v3.RoundRobin"
    )
    override = _lb_policy(
        "envoy.load_balancing_policies.override_host",
        "load_balancing_policies.override_host.v3.OverrideHost",
        override_host_sources=[{"metadata": _metadata_key(DESTINATION_KEY)}, {"header": DESTINATION_KEY}],
        selected_host_key=_metadata_key(SERVED_KEY),
        fallback_policy=round_robin,
    )
    return _cluster("pool", opts.pool, load_balancing_policy=override)


def _picker_cluster(opts: EnvoyOptions) -> dict[str, Any]:
    h2: dict[str, Any] = {
        _TYPE: _T + "upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
    if opts.picker_workers > 1:  # several connections, so that the kernel spreads them over the workers
        h2["explicit_http_config"]["http2_protocol_options"]["max_concurrent_streams"] = PICKER_STREAMS_PER_CONNECTION
        h2["common_http_protocol_options"] = {"max_requests_per_connection": PICKER_CONNECTION_STREAMS}
    # every second, also without traffic: this interval is the window of 500s after a picker crash (see docs).
    # NOT_SERVING takes the picker out at once whatever the threshold (Envoy counts an explicit "unhealthy" answer
    # as an active failure); timeouts and connection failures must repeat `picker_unhealthy_threshold` times, so a
    # picker starved of CPU for a second is not taken out (fail-closed, that was a 500 for every request)
    every_second = {"timeout": "1s", "interval": "1s", "no_traffic_interval": "1s"}
    health = {**every_second, "unhealthy_threshold": opts.picker_unhealthy_threshold, "healthy_threshold": 1}
    extra: dict[str, Any] = {}
    if opts.picker_tls:
        extra["transport_socket"] = _picker_tls(opts)
    if opts.picker_readyz_port is None:
        health["grpc_health_check"] = {"service_name": "envoy.service.ext_proc.v3.ExternalProcessor"}
    else:
        health["http_health_check"] = {"path": "/readyz"}
    health_port = opts.picker_readyz_port or opts.picker_grpc_health_port
    if health_port is not None and opts.picker_tls:  # a plain port: the check picks the cluster's plain socket
        health["transport_socket_match_criteria"] = _PLAIN_MATCH
        raw = _typed("envoy.transport_sockets.raw_buffer", "transport_sockets.raw_buffer.v3.RawBuffer")
        extra["transport_socket_matches"] = [{"name": "plain", "match": _PLAIN_MATCH, "transport_socket": raw}]
    if not _is_ip(opts.picker_host):
        extra.update(type="STRICT_DNS", dns_lookup_family="V4_PREFERRED")
    replicas = [(opts.picker_port, health_port), *opts.extra_pickers]
    if _several_replicas(opts):
        # a replica that refuses a connection (killed) is out at once, not after the health check's 3 misses;
        # only local-origin failures count: a stream the picker ends with an error is a request's, not the replica's
        extra["outlier_detection"] = {
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 1,
            "enforcing_consecutive_local_origin_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "enforcing_consecutive_gateway_failure": 0,
            "enforcing_success_rate": 0,
            "interval": "1s",
            "base_ejection_time": "30s",
            "max_ejection_percent": 100,
        }
        # not round robin: a request opens two streams in a fixed order (the observer's, then the routing one), so
        # with 2 replicas strict alternation sends every routing stream to the same replica (measured: 0 vs 141)
        extra["lb_policy"] = "RANDOM"
    return _cluster(
        "picker",
        [f"{opts.picker_host}:{port}" for port, _ in replicas],
        health_check_ports=[p for _, p in replicas],
        typed_extension_protocol_options={"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
        health_checks=[health],
        common_lb_config={"healthy_panic_threshold": {"value": 0}},
        **extra,
    )


def _several_replicas(opts: EnvoyOptions) -> bool:
    return bool(opts.extra_pickers) or opts.picker_replicas


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _picker_tls(opts: EnvoyOptions) -> dict[str, Any]:
    validation = {"trusted_ca": {"filename": opts.picker_ca_file}} if opts.picker_ca_file else {}
    context: dict[str, Any] = {"common_tls_context": {"alpn_protocols": ["h2"], "validation_context": validation}}
    if opts.picker_sni:
        context["sni"] = opts.picker_sni
    return _typed("envoy.transport_sockets.tls", "transport_sockets.tls.v3.UpstreamTlsContext", **context)


def _request_rules(opts: EnvoyOptions) -> list[dict[str, Any]]:
    drop = {"metadata_namespace": "autonomic.client", "key": DESTINATION_KEY, "type": "STRING"}
    rules: list[dict[str, Any]] = [{"header": DESTINATION_KEY, "remove": True, "on_header_present": drop}]
    if opts.subset_from_header:
        subset = {"metadata_namespace": SUBSET_NAMESPACE, "key": SUBSET_KEY}
        # base64 of a serialized google.protobuf.Value (a list, as GIE reads it), or a comma-separated string
        as_list = {**subset, "type": "PROTOBUF_VALUE", "encode": "BASE64"}
        rules.append({"header": SUBSET_KEY + "-pb", "remove": True, "on_header_present": as_list})
        rules.append({"header": SUBSET_KEY, "remove": True, "on_header_present": {**subset, "type": "STRING"}})
    return rules


_EXT_PROC = "filters.http.ext_proc.v3.ExternalProcessor"


def _picker_service(opts: EnvoyOptions) -> dict[str, Any]:
    """The ext_proc gRPC service; with several replicas, a stream that cannot connect is retried on another one."""
    envoy_grpc: dict[str, Any] = {"cluster_name": "picker"}
    if opts.picker_workers > 1 and not _several_replicas(opts) and opts.picker_stream_retries:
        # one address: a retry opens a new connection to it, which reaches a live worker
        envoy_grpc["retry_policy"] = {
            "retry_on": "connect-failure,refused-stream,reset,unavailable",
            "num_retries": opts.picker_stream_retries,
            "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.1s"},
        }
    elif _several_replicas(opts) and opts.picker_stream_retries:
        previous = _typed(
            "envoy.retry_host_predicates.previous_hosts", "retry.host.previous_hosts.v3.PreviousHostsPredicate"
        )
        envoy_grpc["retry_policy"] = {
            "retry_on": "connect-failure,refused-stream,reset,unavailable",
            "num_retries": opts.picker_stream_retries,
            "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.1s"},
            "retry_host_predicate": [previous],
            "host_selection_retry_max_attempts": 3,
        }
    return {"envoy_grpc": envoy_grpc, "timeout": "10s"}


def _ext_proc(opts: EnvoyOptions) -> dict[str, Any]:
    """The routing filter: the request (and, with observe_response_body, the whole response) through the picker."""
    full_duplex = opts.body_mode == "FULL_DUPLEX_STREAMED"
    response_body = ("FULL_DUPLEX_STREAMED" if full_duplex else "STREAMED") if opts.observe_response_body else "NONE"
    mode = {
        "request_header_mode": "SEND",
        "response_header_mode": "SEND" if opts.observe_response_body else "SKIP",
        "request_body_mode": opts.body_mode,
        "response_body_mode": response_body,
        "request_trailer_mode": "SEND" if full_duplex else "SKIP",
        "response_trailer_mode": "SEND" if response_body == "FULL_DUPLEX_STREAMED" else "SKIP",
    }
    forwarded = [LB_NAMESPACE, SUBSET_NAMESPACE] + ([] if opts.observe_response_body else [OBSERVER_NAMESPACE])
    return _typed(
        "envoy.filters.http.ext_proc",
        _EXT_PROC,
        grpc_service=_picker_service(opts),
        failure_mode_allow=opts.failure_mode_allow,
        message_timeout=f"{opts.message_timeout_s}s",
        processing_mode=mode,
        metadata_options={
            "forwarding_namespaces": {"untyped": forwarded},
            "receiving_namespaces": {"untyped": [LB_NAMESPACE]},
        },
    )


def _response_observer(opts: EnvoyOptions) -> list[dict[str, Any]]:
    """Without observe_response_body: a marker on the request (the routing stream ends after the decision and must
    not report), then an ext_proc filter in observability mode ("send and go": Envoy never waits for it) that sends
    the request headers (x-request-id) and the response headers (status, served endpoint) and keeps its stream open
    until the HTTP stream ends (then `deferred_close_timeout`): the picker learns how and when each request ended
    without any response chunk waiting for it."""
    marker = _typed(
        "autonomic.response_observer_marker",
        "filters.http.set_metadata.v3.Config",
        metadata=[{"metadata_namespace": OBSERVER_NAMESPACE, "value": {OBSERVER_KEY: True}}],
    )
    mode = {
        "request_header_mode": "SEND",
        "response_header_mode": "SEND",
        "request_body_mode": "NONE",
        "response_body_mode": "NONE",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }
    observer = _typed(
        "autonomic.response_observer",
        _EXT_PROC,
        grpc_service=_picker_service(opts),
        observability_mode=True,
        deferred_close_timeout="0.1s",
        failure_mode_allow=True,  # it only observes: a picker it cannot reach must not fail the request
        processing_mode=mode,
        metadata_options={"forwarding_namespaces": {"untyped": [LB_NAMESPACE]}},
    )
    return [marker] if opts.response_ends == "access_log" else [marker, observer]


def _response_log(opts: EnvoyOptions) -> dict[str, Any]:
    """The gRPC access log that tells the picker each response's end (response_ends="access_log")."""
    common = {
        "log_name": "autonomic.response_ends",
        "grpc_service": {"envoy_grpc": {"cluster_name": "picker"}},
        "transport_api_version": "V3",
        "buffer_flush_interval": f"{opts.access_log_flush_s}s",
        "buffer_size_bytes": 16384,
    }
    return _typed("autonomic.response_ends", "access_loggers.grpc.v3.HttpGrpcAccessLogConfig", common_config=common)


def _filters(opts: EnvoyOptions) -> list[dict[str, Any]]:
    h2m = "filters.http.header_to_metadata.v3.Config"
    router = _typed("envoy.filters.http.router", "filters.http.router.v3.Router")
    if opts.picker_port is None:
        return [router]
    filters = [_typed("autonomic.request_to_metadata", h2m, request_rules=_request_rules(opts))]
    if not opts.observe_response_body:
        filters += _response_observer(opts)
    filters.append(_ext_proc(opts))
    if opts.routing == "original_dst":
        to_md = {"metadata_namespace": LB_NAMESPACE, "key": SERVED_KEY, "type": "STRING"}
        rules = [{"header": SERVED_KEY, "remove": True, "on_header_present": to_md}]
        filters.append(_typed("autonomic.served_to_metadata", h2m, response_rules=rules))
    return [*filters, router]


def _routes(opts: EnvoyOptions) -> list[dict[str, Any]]:
    timeout = f"{opts.route_timeout_s}s"
    to_pool: dict[str, Any] = {"match": {"prefix": "/"}, "route": {"cluster": "pool", "timeout": timeout}}
    if opts.picker_port is None:
        return [to_pool]
    if opts.routing == "override_host":
        policy = {"retry_on": "connect-failure,refused-stream,reset", "num_retries": opts.retries}
        return [{**to_pool, "route": {**to_pool["route"], "retry_policy": policy}}]
    served: dict[str, Any] = {"header": {"key": SERVED_KEY, "value": "%UPSTREAM_REMOTE_ADDRESS%"}}
    served["append_action"] = "OVERWRITE_IF_EXISTS_OR_ADD"
    picked = {
        "match": {"prefix": "/", "headers": [{"name": DESTINATION_KEY, "present_match": True}]},
        "route": {"cluster": "original_destination_cluster", "timeout": timeout},
        "response_headers_to_add": [served],
    }
    return [picked, {**to_pool, "response_headers_to_add": [served]}] if opts.pool else [picked]


def render(opts: EnvoyOptions) -> dict[str, Any]:
    """The bootstrap as a dict (yaml.safe_dump of it is what Envoy reads)."""
    if not opts.pool and (opts.picker_port is None or opts.routing == "override_host"):
        raise ValueError("this routing needs the pool of model-server addresses")
    for field in ("picker_readyz_port", "picker_grpc_health_port"):
        port = getattr(opts, field)
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"{field} must be a port (1-65535), got {port}")
    if opts.picker_readyz_port is not None and opts.picker_grpc_health_port is not None:
        raise ValueError("picker_readyz_port and picker_grpc_health_port are exclusive (one health check)")
    for port, health in opts.extra_pickers:
        if not 0 < port < 65536 or (health is not None and not 0 < health < 65536):
            raise ValueError(f"extra_pickers: ({port}, {health}) is not a pair of ports (1-65535)")
    if not 0 < opts.access_log_flush_s <= 60:
        raise ValueError(f"access_log_flush_s must be in (0, 60] seconds, got {opts.access_log_flush_s}")
    if opts.picker_workers < 1:
        raise ValueError(f"picker_workers must be at least 1, got {opts.picker_workers}")
    if opts.picker_stream_retries < 0:
        raise ValueError(f"picker_stream_retries must be >= 0, got {opts.picker_stream_retries}")
    if opts.picker_unhealthy_threshold < 1:
        raise ValueError(f"picker_unhealthy_threshold must be at least 1, got {opts.picker_unhealthy_threshold}")
    clusters = [_pool_cluster(opts)] if opts.pool else []
    if opts.picker_port is not None:
        clusters.append(_picker_cluster(opts))
    if opts.picker_port is not None and opts.routing == "original_dst":
        by_header = {"use_http_header": True, "http_header_name": DESTINATION_KEY}
        odst = {"name": "original_destination_cluster", "type": "ORIGINAL_DST", "connect_timeout": "1s"}
        clusters.append({**odst, "lb_policy": "CLUSTER_PROVIDED", "original_dst_lb_config": by_header})
    vhost = {"name": "pool", "domains": ["*"], "routes": _routes(opts)}
    hcm: dict[str, Any] = {
        _TYPE: _T + "filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "inference",
        "codec_type": "AUTO",
        "route_config": {"name": "inference", "virtual_hosts": [vhost]},
        "http_filters": _filters(opts),
    }
    if opts.stream_idle_timeout_s is not None:
        hcm["stream_idle_timeout"] = f"{opts.stream_idle_timeout_s}s"
    if opts.access_log:
        line = "[access] %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_HOST% "
        fmt = {"text_format_source": {"inline_string": line + "%DYNAMIC_METADATA(envoy.lb)%\n"}}
        stderr = _typed("envoy.access_loggers.stderr", "access_loggers.stream.v3.StderrAccessLog", log_format=fmt)
        hcm["access_log"] = [stderr]
    if opts.extproc_log_path:
        fields = {
            "request_id": "%REQ(X-REQUEST-ID)%",
            "status": "%RESPONSE_CODE%",
            "duration_ms": "%DURATION%",
            "ext_proc": "%FILTER_STATE(envoy.filters.http.ext_proc:TYPED)%",
            # from the request's first byte to Envoy sending it upstream: the whole routing decision, any router
            "routed_us": "%COMMON_DURATION(DS_RX_BEG:US_TX_BEG:us)%",
        }
        file_log = _typed(
            "envoy.access_loggers.file",
            "access_loggers.file.v3.FileAccessLog",
            path=opts.extproc_log_path,
            log_format={"json_format": fields},
        )
        hcm.setdefault("access_log", []).append(file_log)
    if opts.picker_port is not None and not opts.observe_response_body and opts.response_ends == "access_log":
        hcm.setdefault("access_log", []).append(_response_log(opts))
    hcm_filter = {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
    listener = {"name": "inference", **_address(f"{opts.listen_host}:{opts.listen_port}")}
    listener["filter_chains"] = [{"filters": [hcm_filter]}]
    return {
        "admin": _address(f"127.0.0.1:{opts.admin_port}"),
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }


def render_yaml(opts: EnvoyOptions) -> str:
    head = "# Rendered by `python -m scorer.extproc.envoy_config`; see docs/picker-envoy.md.\n"
    return head + yaml.safe_dump(render(opts), sort_keys=False, width=120)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Render the local Envoy config for the endpoint picker.")
    ap.add_argument("--listen-port", type=int, default=8081)
    ap.add_argument("--admin-port", type=int, default=19000)
    ap.add_argument("--picker-port", type=int, default=9002)
    ap.add_argument("--picker-host", default="127.0.0.1", help="IP, or a DNS name (resolved by Envoy)")
    ap.add_argument("--picker-tls", action="store_true", help="ext_proc over TLS (not verified without --picker-ca)")
    ap.add_argument("--picker-ca", default=None, help="CA file that verifies the picker's certificate")
    ap.add_argument("--picker-sni", default=None, help="SNI (and name checked with --picker-ca)")
    ap.add_argument(
        "--picker-readyz-port",
        type=int,
        default=9090,
        help="the picker's --metrics-port: Envoy health-checks its /readyz over plain HTTP (default 9090; 0: gRPC "
        "health on the ext_proc port, where a late answer can eject the picker at once, see docs/picker-envoy.md)",
    )
    ap.add_argument(
        "--picker-grpc-health-port",
        type=int,
        default=None,
        help="gRPC health of the ext_proc service on this port instead of /readyz (an ext_proc server that answers "
        "it apart, as the GIE EPP on its --grpc-health-port); overrides --picker-readyz-port",
    )
    ap.add_argument(
        "--picker-replicas",
        action="store_true",
        help="--picker-host resolves to several active-active replicas (a headless Service): random balancing, "
        "ejection at the first refused connection, ext_proc streams retried on another replica",
    )
    ap.add_argument(
        "--picker-workers",
        type=int,
        default=1,
        help="the picker runs --workers N (N > 1): several connections to it, re-opened every "
        f"{PICKER_CONNECTION_STREAMS} streams, so that its workers share the streams; reset streams retried",
    )
    ap.add_argument("--listen-host", default="127.0.0.1")
    ap.add_argument("--pool", default="127.0.0.1:8100,127.0.0.1:8101", help="model servers, comma-separated ('': none)")
    ap.add_argument("--routing", choices=["override_host", "original_dst"], default="override_host")
    ap.add_argument("--no-picker", action="store_true", help="plain round-robin baseline over --pool")
    ap.add_argument("--fail-open", action="store_true", help="failure_mode_allow: true")
    ap.add_argument("--buffered", action="store_true", help="request body mode BUFFERED (older gateways)")
    ap.add_argument("--subset-from-header", action="store_true")
    ap.add_argument(
        "--observe-response-body",
        action="store_true",
        help="send the response body through the picker too (only to read token usage; each chunk then waits)",
    )
    ap.add_argument(
        "--response-ends",
        choices=["ext_proc", "access_log"],
        default="ext_proc",
        help="how the picker learns that a response ended: an observer ext_proc stream per request (default) or "
        "Envoy's gRPC access log (batched on one stream per Envoy worker: half the picker's streams)",
    )
    ap.add_argument("-o", "--output", default="-")
    a = ap.parse_args(argv)
    opts = EnvoyOptions(
        listen_port=a.listen_port,
        admin_port=a.admin_port,
        picker_port=None if a.no_picker else a.picker_port,
        picker_host=a.picker_host,
        picker_replicas=a.picker_replicas,
        picker_workers=a.picker_workers,
        picker_tls=a.picker_tls or a.picker_ca is not None,
        picker_ca_file=a.picker_ca,
        picker_sni=a.picker_sni,
        picker_readyz_port=None if a.picker_grpc_health_port else a.picker_readyz_port or None,
        picker_grpc_health_port=a.picker_grpc_health_port,
        listen_host=a.listen_host,
        pool=tuple(p for p in a.pool.split(",") if p),
        routing=a.routing,
        failure_mode_allow=a.fail_open,
        body_mode="BUFFERED" if a.buffered else "FULL_DUPLEX_STREAMED",
        subset_from_header=a.subset_from_header,
        observe_response_body=a.observe_response_body,
        response_ends=a.response_ends,
    )
    text = render_yaml(opts)
    if a.output == "-":
        print(text, end="")
    else:
        Path(a.output).write_text(text)


if __name__ == "__main__":
    main()
