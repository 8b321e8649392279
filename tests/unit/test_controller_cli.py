"""`autonomic controller` argument and configuration handling: flags override the file, every error is reported
with its path (and the file's name), exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from autonomic.cli import build_parser
from controller.cli import load, run


def parse(*argv: str):
    return build_parser().parse_args(["controller", "--prometheus-url", "http://127.0.0.1:1", *argv])


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("policy: descheduler-compatible\nactuator: migration\nlimits: {maxInFlightTotal: 3}\n")
    config = load(parse("--config", str(path), "--policy", "psi-relief", "--dry-run"))
    assert (config.policy, config.dry_run, config.actuator, config.limits.max_in_flight_total) == (
        "psi-relief",
        True,
        "migration",
        3,
    )
    assert load(parse()).policy == "descheduler-compatible"  # no file: the profile's defaults


@pytest.mark.parametrize(
    ("text", "argv", "errors"),
    [
        (
            "psiRelief: {low: 0.5, high: 0.3}\nlimits: {maxInFlightTotal: -1}\n",
            (),
            ["limits.maxInFlightTotal: Input should be greater than or equal to 0"],
        ),
        (
            "psiRelief: {low: 0.5, high: 0.3}\n",
            ("--policy", "psi-relief"),
            ["psiRelief.low: must be <= psiRelief.high"],
        ),
        ("metrics: {source: raw-psi}\n", (), ["metrics.source: raw-psi provides no score"]),
        ("[1, 2]\n", (), ["document: must be a mapping"]),
        ("policy: [\n", (), ["yaml:"]),
        ("metrics: {vmQueries: {cpu: x}}\n", (), ["metrics.vmQueries.cpu: Extra inputs are not permitted"]),
    ],
)
def test_config_errors_name_the_file_and_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, argv: tuple[str, ...], errors: list[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert run(parse("--config", str(path), *argv)) == 2
    err = capsys.readouterr().err
    for error in errors:
        assert f"error: {path}: {error}" in err


def test_missing_file_and_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse("--config", str(tmp_path / "none.yaml"))) == 2
    assert "none.yaml: No such file or directory" in capsys.readouterr().err
    assert run(parse("--interval", "0", "--lease-duration", "1")) == 2
    err = capsys.readouterr().err
    assert "--interval: must be > 0" in err and "--retry-period < --renew-deadline < --lease-duration" in err
