"""`autonomic picker` flags and start-up refusals, in process (the running picker is tested in integration/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autonomic.cli import build_parser
from scorer import cli


def _args(*argv: str):
    return build_parser().parse_args(["picker", *argv])


def test_serving_flags_without_a_sub_action():
    args = _args("--endpoints", "10.0.0.1:8000,10.0.0.2:8000", "--port", "0", "--scrape-interval", "0.05")
    assert args.command == "picker" and args.picker_action is None
    assert (args.endpoints, args.port, args.health_port, args.metrics_port) == (
        "10.0.0.1:8000,10.0.0.2:8000",
        0,
        9003,
        9090,
    )
    assert (args.scrape_interval, args.scrape_timeout, args.staleness, args.drain_seconds) == (0.05, 1.0, 2.0, 5.0)
    assert args.config is None and args.host == "127.0.0.1"
    assert args.max_buffered_body_bytes == 256 * 2**20
    assert _args("--max-buffered-body-bytes", "1Gi").max_buffered_body_bytes == 2**30


def test_explain_sub_action():
    args = _args("explain", "--prompt-file", "p.txt", "--target", "10.0.0.9:9002", "--subset", "a:1", "--chat")
    assert args.picker_action == "explain"
    assert (args.prompt_file, args.target, args.subset, args.chat) == (Path("p.txt"), "10.0.0.9:9002", "a:1", True)


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "70000"],
        ["--metrics-port", "-1"],
        ["--scrape-interval", "0"],
        ["--scrape-timeout", "nan"],
        ["--drain-seconds", "-1"],
        ["--workers", "0"],
        ["--workers", "two"],
        ["--max-buffered-body-bytes", "1Mi"],  # less than one body at the 32Mi limit
        ["--max-buffered-body-bytes", "lots"],
        ["explain"],  # --prompt-file is required
    ],
)
def test_bad_flags_exit_2(argv: list[str]):
    with pytest.raises(SystemExit) as exc:
        _args(*argv)
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("argv", "files", "message"),
    [
        ([], {}, "error: no endpoints: give --endpoints HOST:PORT,..., --endpoints-file FILE or --pool NAME"),
        (["--pool", "p", "--endpoints", "a:1"], {}, "--pool and --endpoints/--endpoints-file exclude each other"),
        (["--pool", "p", "--kubeconfig", "{tmp}/none.yaml"], {}, "--kubeconfig {tmp}/none.yaml: "),
        (
            ["--pool", "p", "--kubeconfig", "{tmp}/kc.yaml"],
            {"kc.yaml": "apiVersion: v1\nkind: Config\n"},
            "--kubeconfig",
        ),
        (["--endpoints", "a:1,b"], {}, "--endpoints[1].address: endpoint address must be host:port, got 'b'"),
        (
            ["--endpoints", "a:1", "--endpoints-file", "{tmp}/pool.yaml"],
            {"pool.yaml": "endpoints: [a:1]\n"},
            "endpoints listed twice (--endpoints and --endpoints-file): a:1",
        ),
        (
            ["--endpoints-file", "{tmp}/pool.yaml"],
            {"pool.yaml": "endpoints: [a:1, {address: b:2, port: 3}]\n"},
            "endpoints[1].port: unknown field",
        ),
        (
            ["--endpoints", "a:1", "--config", "{tmp}/bad.yaml"],
            {"bad.yaml": "apiVersion: autonomic.dev/v1alpha1\nkind: EndpointPickerConfig\nplugins: [{type: nope}]\n"},
            "plugins[0].type: unknown plugin type 'nope'",
        ),
        (["--endpoints", "a:1", "--config", "{tmp}/missing.yaml"], {}, "missing.yaml: No such file or directory"),
        (["--endpoints", "a:1", "--workers", "2", "--peers", "b:9004"], {}, "--workers > 1 and --peers: not supported"),
        # the supervisor checks what its workers would refuse before starting any
        (["--endpoints", "a:1,b", "--workers", "2"], {}, "--endpoints[1].address: endpoint address must be host:port"),
    ],
)
def test_refusals_exit_2_with_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], files: dict[str, str], message: str
):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    args = _args(*(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert cli.run(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message.replace("{tmp}", str(tmp_path)) in err
