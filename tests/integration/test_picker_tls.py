"""The picker's ext_proc over TLS: the real Envoy routes through a TLS picker to the fleet twin.

Three ways in, as deployed: a self-signed certificate made at start and an Envoy that encrypts without verifying
(GIE's default), a provided certificate that Envoy verifies against its CA and SNI, and a provided certificate
rotated on disk (served from the next connection on). The health-only port stays plaintext for the kubelet.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from envoy_fixture import completion_body, fleet_addresses, new_request_id, picker_options, post_completion, served_by
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.envoy import LocalEnvoy
from harness.picker import PickerProcess
from scorer.extproc.roundrobin import RoundRobinBackend
from scorer.extproc.server import serve_extproc
from scorer.extproc.tls import CertSource, self_signed
from sim.fleet.fleet import Fleet

EXTPROC = "envoy.service.ext_proc.v3.ExternalProcessor"


def _write_pair(directory: Path, hosts: list[str], days: int = 30) -> Path:
    pair = self_signed(hosts, datetime.now(UTC), days=days)
    (directory / "tls.crt").write_bytes(pair.cert_pem)
    (directory / "tls.key").write_bytes(pair.key_pem)
    return directory / "tls.crt"


def _touch(directory: Path, ahead_s: int) -> None:
    """New modification times on both files (a rewrite within the file system's time resolution looks unchanged)."""
    stamp = (datetime.now(UTC) + timedelta(seconds=ahead_s)).timestamp()
    for name in ("tls.crt", "tls.key"):
        os.utime(directory / name, (stamp, stamp))


async def _health(channel: grpc.aio.Channel, service: str = EXTPROC) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(answer.status)


async def _explain(tmp_path: Path, port: int, *flags: str) -> tuple[int, str]:
    """`autonomic picker explain` as a process against the picker on `port`: (exit code, stdout + stderr)."""
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("hello over tls")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autonomic", "picker", "explain", "--prompt-file", str(prompt),
        "--target", f"127.0.0.1:{port}", "--model", "m", "--timeout", "10", *flags,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode()


async def _route_one(fleet: Fleet, picker: PickerProcess, **envoy: object) -> list[int]:
    opts = picker_options(picker, fleet_addresses(fleet), **envoy)
    async with LocalEnvoy(opts) as proxy:
        rid = new_request_id()
        status, raw = await post_completion(proxy.url, completion_body(fleet, "hello over tls", rid), {})
        assert status == 200, raw
        return await served_by(fleet, rid)


async def test_self_signed_picker_routes_through_envoy(fleet2: Fleet, tmp_path: Path):
    picker = PickerProcess(fleet_addresses(fleet2), scrape_interval_s=0.2, extra_args=["--secure-serving"])
    await picker.start()
    try:
        assert picker.ready_line.endswith("tls=self-signed")
        assert len(await _route_one(fleet2, picker, picker_tls=True)) == 1
        # the kubelet's probe port answers in plaintext; the main port refuses plaintext
        async with grpc.aio.insecure_channel(f"127.0.0.1:{picker.health_port}") as channel:
            assert await _health(channel, "liveness") == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{picker.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await _health(channel)
        # `picker explain` dials TLS trusting the presented (self-signed) certificate; plaintext fails
        code, out = await _explain(tmp_path, picker.port, "--tls-insecure")
        assert code == 0 and "choice:" in out, out
        code, out = await _explain(tmp_path, picker.port)
        assert code == 1 and "explain on" in out, out
    finally:
        await picker.stop()


async def test_provided_certificate_verified_by_envoy(fleet2: Fleet, tmp_path: Path):
    cert = _write_pair(tmp_path, ["autonomic-picker.autonomic.svc", "127.0.0.1"])
    args = ["--tls-cert", str(cert), "--tls-key", str(tmp_path / "tls.key")]
    picker = PickerProcess(fleet_addresses(fleet2), scrape_interval_s=0.2, extra_args=args)
    await picker.start()
    try:
        assert picker.ready_line.endswith(f"tls={cert}")
        verified = {"picker_tls": True, "picker_ca_file": str(cert), "picker_sni": "autonomic-picker.autonomic.svc"}
        assert len(await _route_one(fleet2, picker, **verified)) == 1
        code, out = await _explain(
            tmp_path, picker.port, "--tls-ca", str(cert), "--tls-server-name", "autonomic-picker.autonomic.svc"
        )
        assert code == 0 and "choice:" in out, out
    finally:
        await picker.stop()


async def test_bad_certificate_flags_exit_2(tmp_path: Path):
    cert = _write_pair(tmp_path, ["localhost"])
    other = tmp_path / "other"
    other.mkdir()
    _write_pair(other, ["localhost"])
    cases = [
        (["--tls-cert", str(cert)], "--tls-cert and --tls-key go together"),
        (["--tls-cert", str(cert), "--tls-key", str(other / "tls.key")], "does not belong to the certificate"),
        (["--tls-cert", str(tmp_path / "missing.crt"), "--tls-key", str(cert)], "missing.crt"),
    ]
    for argv, expected in cases:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "autonomic",
            "picker",
            "--endpoints",
            "127.0.0.1:1",
            "--port",
            "0",
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        assert proc.returncode == 2, err
        assert expected in err.decode(), err


async def test_rotated_certificate_is_served_to_new_connections(tmp_path: Path):
    first = _write_pair(tmp_path, ["localhost"])
    first_pem = first.read_bytes()
    source = CertSource.from_files(first, tmp_path / "tls.key")
    backend = RoundRobinBackend(["127.0.0.1:1"])
    handle = await serve_extproc(backend, port=0, tls=source)
    target = f"127.0.0.1:{handle.port}"
    options = (("grpc.ssl_target_name_override", "localhost"),)
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=first_pem)
        async with grpc.aio.secure_channel(target, creds, options=options) as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        # a half-written rotation (a key that does not match) keeps the old pair
        (tmp_path / "tls.key").write_bytes(self_signed(["localhost"], datetime.now(UTC)).key_pem)
        _touch(tmp_path, 5)
        async with grpc.aio.secure_channel(target, creds, options=options) as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        assert source.reloads == 0
        second_pem = _write_pair(tmp_path, ["localhost"]).read_bytes()
        _touch(tmp_path, 10)
        rotated = grpc.ssl_channel_credentials(root_certificates=second_pem)
        async with grpc.aio.secure_channel(target, rotated, options=options) as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        assert source.reloads == 1
        async with grpc.aio.secure_channel(target, creds, options=options) as channel:
            with pytest.raises(grpc.aio.AioRpcError):  # the old CA no longer verifies what is served
                await _health(channel)
    finally:
        await handle.stop(0)
