"""The rendered Envoy configs: the checked-in files are current, and the real binary accepts every variant."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from harness.envoy import envoy_binary
from scorer.extproc.envoy_config import EnvoyOptions, main, render, render_yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "local"
CHECKED_IN = {
    "envoy.yaml": [],
    "envoy-buffered.yaml": ["--buffered", "--fail-open"],
    "envoy-original-dst.yaml": ["--routing", "original_dst"],
}
POOL = ("127.0.0.1:8100", "127.0.0.1:8101")


@pytest.mark.parametrize(("name", "args"), CHECKED_IN.items())
def test_checked_in_renders_are_current(tmp_path: Path, name: str, args: list[str]):
    out = tmp_path / name
    main([*args, "-o", str(out)])
    assert out.read_text() == (DEPLOY / name).read_text(), (
        f"re-render with: python -m scorer.extproc.envoy_config {args}"
    )


VARIANTS = [
    EnvoyOptions(pool=POOL),
    EnvoyOptions(pool=POOL, body_mode="BUFFERED", failure_mode_allow=True, subset_from_header=True),
    EnvoyOptions(pool=POOL, routing="original_dst", access_log=True),
    EnvoyOptions(pool=(), routing="original_dst"),
    EnvoyOptions(pool=POOL, picker_port=None),
    EnvoyOptions(pool=POOL, picker_readyz_port=9090),
    EnvoyOptions(pool=POOL, observe_response_body=True),
    EnvoyOptions(
        pool=(), routing="original_dst", picker_host="picker.example", picker_tls=True, picker_readyz_port=9090
    ),
    EnvoyOptions(pool=POOL, picker_tls=True, picker_grpc_health_port=9003),
    EnvoyOptions(pool=POOL, picker_readyz_port=9090, extra_pickers=[(9012, 9091), (9022, 9092)]),
    EnvoyOptions(pool=POOL, body_mode="BUFFERED", failure_mode_allow=True, extra_pickers=[(9012, None)]),
    EnvoyOptions(pool=POOL, picker_readyz_port=9090, picker_workers=2),
    EnvoyOptions(pool=POOL, picker_readyz_port=9090, response_ends="access_log"),
]


@pytest.mark.parametrize("opts", VARIANTS)
def test_envoy_accepts_every_variant(tmp_path: Path, opts: EnvoyOptions):
    path = tmp_path / "envoy.yaml"
    path.write_text(render_yaml(opts))
    done = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_shape_of_the_chain():
    chain = render(EnvoyOptions(pool=POOL))["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    names = [f["name"] for f in chain["typed_config"]["http_filters"]]
    observer = ["autonomic.response_observer_marker", "autonomic.response_observer"]
    assert names == [
        "autonomic.request_to_metadata",
        *observer,
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.router",
    ]
    whole = render(EnvoyOptions(pool=POOL, observe_response_body=True))["static_resources"]["listeners"][0]
    names = [f["name"] for f in whole["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]]
    assert names == ["autonomic.request_to_metadata", "envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    plain = render(EnvoyOptions(pool=POOL, picker_port=None))["static_resources"]
    assert [c["name"] for c in plain["clusters"]] == ["pool"]
    with pytest.raises(ValueError):
        render(EnvoyOptions(pool=()))


@pytest.mark.parametrize(("threshold", "error"), [(3, None), (1, None), (0, "picker_unhealthy_threshold")])
def test_picker_health_check_threshold(threshold: int, error: str | None):
    opts = EnvoyOptions(pool=POOL, picker_unhealthy_threshold=threshold)
    if error is not None:
        with pytest.raises(ValueError, match=error):
            render(opts)
        return
    picker = next(c for c in render(opts)["static_resources"]["clusters"] if c["name"] == "picker")
    (check,) = picker["health_checks"]
    assert (check["unhealthy_threshold"], check["healthy_threshold"], check["timeout"]) == (threshold, 1, "1s")


def test_default_tolerates_one_late_health_check():
    """A picker late for one check (CPU starvation) stays in the path; see test_extproc_failures."""
    assert EnvoyOptions().picker_unhealthy_threshold > 1


def _picker_cluster(opts: EnvoyOptions) -> dict:
    return next(c for c in render(opts)["static_resources"]["clusters"] if c["name"] == "picker")


@pytest.mark.parametrize(
    ("opts", "kind", "port", "plain_match"),
    [
        (EnvoyOptions(pool=POOL), "grpc_health_check", None, False),
        (EnvoyOptions(pool=POOL, picker_readyz_port=9090), "http_health_check", 9090, False),
        (EnvoyOptions(pool=POOL, picker_tls=True, picker_readyz_port=9191), "http_health_check", 9191, True),
        (EnvoyOptions(pool=POOL, picker_tls=True), "grpc_health_check", None, False),
        (EnvoyOptions(pool=POOL, picker_grpc_health_port=9003), "grpc_health_check", 9003, False),
        (EnvoyOptions(pool=POOL, picker_tls=True, picker_grpc_health_port=9003), "grpc_health_check", 9003, True),
    ],
)
def test_picker_health_check_kind(opts: EnvoyOptions, kind: str, port: int | None, plain_match: bool):
    """/readyz over HTTP on the picker's metrics port when given (a late answer is a timeout, not an explicit
    failure), on a plain socket even when ext_proc is TLS; gRPC health on a health port when given (the GIE EPP's
    --grpc-health-port), also plain; gRPC health on the ext_proc port otherwise."""
    picker = _picker_cluster(opts)
    (check,) = picker["health_checks"]
    assert kind in check and {"grpc_health_check", "http_health_check"} - {kind} - check.keys()
    if kind == "http_health_check":
        assert check[kind] == {"path": "/readyz"}
    else:
        assert check[kind] == {"service_name": "envoy.service.ext_proc.v3.ExternalProcessor"}
    (endpoint,) = picker["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"].get("health_check_config", {}).get("port_value") == port
    matches = picker.get("transport_socket_matches", [])
    assert bool(matches) == plain_match == ("transport_socket_match_criteria" in check)
    if plain_match:
        assert matches[0]["match"] == check["transport_socket_match_criteria"]
        assert matches[0]["transport_socket"]["name"] == "envoy.transport_sockets.raw_buffer"
        assert picker["transport_socket"]["name"] == "envoy.transport_sockets.tls"  # ext_proc itself stays TLS


@pytest.mark.parametrize("port", [0, -1, 65536])
@pytest.mark.parametrize("field", ["picker_readyz_port", "picker_grpc_health_port"])
def test_picker_health_ports_are_ports(field: str, port: int):
    with pytest.raises(ValueError, match=field):
        render(EnvoyOptions(pool=POOL, **{field: port}))


def test_one_picker_health_check_only():
    with pytest.raises(ValueError, match="exclusive"):
        render(EnvoyOptions(pool=POOL, picker_readyz_port=9090, picker_grpc_health_port=9003))


@pytest.mark.parametrize(
    ("args", "port", "kind"),
    [
        ([], 9090, "http_health_check"),
        (["--picker-readyz-port", "9191"], 9191, "http_health_check"),
        (["--picker-readyz-port", "0"], None, "grpc_health_check"),
        (["--picker-grpc-health-port", "9003"], 9003, "grpc_health_check"),
    ],
)
def test_cli_health_checks_readyz_by_default(tmp_path: Path, args: list[str], port: int | None, kind: str):
    out = tmp_path / "envoy.yaml"
    main([*args, "-o", str(out)])
    picker = next(c for c in yaml.safe_load(out.read_text())["static_resources"]["clusters"] if c["name"] == "picker")
    endpoint = picker["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint.get("health_check_config", {}).get("port_value") == port
    assert kind in picker["health_checks"][0]


def _filters(opts: EnvoyOptions) -> dict[str, dict]:
    listener = render(opts)["static_resources"]["listeners"][0]
    return {
        f["name"]: f["typed_config"] for f in listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    }


@pytest.mark.parametrize("body_mode", ["FULL_DUPLEX_STREAMED", "BUFFERED"])
def test_no_response_phase_waits_for_the_picker_by_default(body_mode: str):
    """The routing filter sends only the request; the observer, which Envoy never waits for, sends the request and
    response headers; the request is marked so that the routing stream does not report its outcome."""
    filters = _filters(EnvoyOptions(pool=POOL, body_mode=body_mode))  # type: ignore[arg-type]
    routing = filters["envoy.filters.http.ext_proc"]
    assert routing["processing_mode"]["response_header_mode"] == "SKIP"
    assert routing["processing_mode"]["response_body_mode"] == "NONE"
    assert "autonomic.extproc" in routing["metadata_options"]["forwarding_namespaces"]["untyped"]
    observer = filters["autonomic.response_observer"]
    assert observer["observability_mode"] is True and observer["failure_mode_allow"] is True
    mode = observer["processing_mode"]
    assert (mode["request_header_mode"], mode["response_header_mode"]) == ("SEND", "SEND")
    assert (mode["request_body_mode"], mode["response_body_mode"]) == ("NONE", "NONE")
    marker = filters["autonomic.response_observer_marker"]["metadata"]
    assert marker == [{"metadata_namespace": "autonomic.extproc", "value": {"response_observer": True}}]


@pytest.mark.parametrize(
    ("body_mode", "response"), [("FULL_DUPLEX_STREAMED", "FULL_DUPLEX_STREAMED"), ("BUFFERED", "STREAMED")]
)
def test_observe_response_body_sends_the_whole_response(body_mode: str, response: str):
    filters = _filters(EnvoyOptions(pool=POOL, body_mode=body_mode, observe_response_body=True))  # type: ignore[arg-type]
    mode = filters["envoy.filters.http.ext_proc"]["processing_mode"]
    assert (mode["response_header_mode"], mode["response_body_mode"]) == ("SEND", response)
    assert "autonomic.response_observer" not in filters


def _ext_procs(opts: EnvoyOptions) -> list[dict]:
    hcm = render(opts)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return [f["typed_config"] for f in hcm["http_filters"] if "grpc_service" in f.get("typed_config", {})]


def test_several_replicas_are_balanced_ejected_and_retried():
    """Each replica a host with its own health port; random balancing (round robin would give every routing stream to
    one replica: the observer's stream opens first on every request); ejection at the first refused connection,
    longer than the health check takes to notice; both ext_proc filters retry a stream on another replica."""
    opts = EnvoyOptions(pool=POOL, picker_readyz_port=9090, extra_pickers=[(9012, 9091)])
    picker = _picker_cluster(opts)
    hosts = [e["endpoint"] for e in picker["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert [(h["address"]["socket_address"]["port_value"], h["health_check_config"]["port_value"]) for h in hosts] == [
        (9002, 9090),
        (9012, 9091),
    ]
    assert picker["lb_policy"] == "RANDOM"
    outlier = picker["outlier_detection"]
    assert outlier["consecutive_local_origin_failure"] == 1 and outlier["split_external_local_origin_errors"]
    assert outlier["enforcing_consecutive_5xx"] == 0  # a stream the picker ends with an error is not the replica's
    assert int(outlier["base_ejection_time"].rstrip("s")) > 3 * opts.picker_unhealthy_threshold
    filters = _ext_procs(opts)
    assert len(filters) == 2  # the observer and the routing filter
    for f in filters:
        retry = f["grpc_service"]["envoy_grpc"]["retry_policy"]
        assert retry["num_retries"] == 2 and "connect-failure" in retry["retry_on"]
        assert retry["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"


@pytest.mark.parametrize(
    "opts",
    [EnvoyOptions(pool=POOL), EnvoyOptions(pool=POOL, extra_pickers=[(9012, None)], picker_stream_retries=0)],
)
def test_one_replica_or_no_retries_render_without_them(opts: EnvoyOptions):
    assert all("retry_policy" not in f["grpc_service"]["envoy_grpc"] for f in _ext_procs(opts))
    if not opts.extra_pickers:
        assert {"outlier_detection", "lb_policy"}.isdisjoint(_picker_cluster(opts))


def test_a_dns_name_with_several_replicas_gets_the_same_settings():
    opts = EnvoyOptions(pool=(), routing="original_dst", picker_host="picker-replicas.llm.svc", picker_replicas=True)
    picker = _picker_cluster(opts)
    assert picker["type"] == "STRICT_DNS" and picker["lb_policy"] == "RANDOM" and "outlier_detection" in picker


@pytest.mark.parametrize(
    ("changes", "error"),
    [({"extra_pickers": [(0, 9091)]}, "extra_pickers"), ({"extra_pickers": [(9012, 70000)]}, "extra_pickers"),
     ({"picker_stream_retries": -1}, "picker_stream_retries")],
)  # fmt: skip
def test_bad_replica_options_are_refused(changes: dict, error: str):
    with pytest.raises(ValueError, match=error):
        render(EnvoyOptions(pool=POOL, **changes))


@pytest.mark.parametrize(("workers", "spread"), [(1, False), (2, True), (8, True)])
def test_a_picker_with_workers_gets_several_connections_and_stream_retries(workers: int, spread: bool):
    rendered = render(EnvoyOptions(pool=POOL, picker_workers=workers))["static_resources"]
    picker = next(c for c in rendered["clusters"] if c["name"] == "picker")
    protocol = picker["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    h2 = protocol["explicit_http_config"]["http2_protocol_options"]
    assert ("max_concurrent_streams" in h2) is spread
    assert ("common_http_protocol_options" in protocol) is spread
    text = render_yaml(EnvoyOptions(pool=POOL, picker_workers=workers))
    assert ("retry_policy" in text.split("envoy_grpc")[1].split("timeout")[0]) is spread
    with pytest.raises(ValueError, match="picker_workers"):
        render(EnvoyOptions(pool=POOL, picker_workers=0))


def test_response_ends_through_the_access_log_drop_the_observer_stream():
    def shape(opts: EnvoyOptions) -> tuple[list[str], list[str]]:
        hcm = render(opts)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        return [f["name"] for f in hcm["http_filters"]], [log["name"] for log in hcm.get("access_log", [])]

    filters, logs = shape(EnvoyOptions(pool=POOL, response_ends="access_log"))
    assert "autonomic.response_observer" not in filters and "autonomic.response_observer_marker" in filters
    assert logs == ["autonomic.response_ends"]
    filters, logs = shape(EnvoyOptions(pool=POOL))
    assert "autonomic.response_observer" in filters and logs == []
    with pytest.raises(ValueError, match="access_log_flush_s"):
        render(EnvoyOptions(pool=POOL, response_ends="access_log", access_log_flush_s=0))
