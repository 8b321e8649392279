"""Heterogeneous-pool routing simulation: whole H100s and 3g.40gb MIG slices behind one picker, in model time.

Why it exists: the capacity-aware profile (`scorer/dra-config.yaml`) claims that weighting load by the size of the
GPU behind each endpoint serves a mixed pool better than treating every replica alike. The fleet twin's servers all
model one whole H100, so this runs `loadtests/routing/in_process.py`'s discrete-event loop (`replay`) with two engine
profiles: the shipped H100 profile, and a 3g.40gb slice of it (stated scaling below). Every endpoint carries the DRA
hints discovery would give it (a whole GPU of 132 SMs / 80 GiB, a MIG slice of 60 SMs / 40 GiB) and reports its own
`num_gpu_blocks`. Each profile replays the same trace in the same run, on fresh engines.

The 3g.40gb slice (NVIDIA's MIG table for H100: 3 of 7 compute slices = 60 of 132 SMs, 4 of 8 memory slices):
compute terms (`linear_s_per_token`, `attn_s_per_token_pair`, `decode_s_per_seq`) x 132/60; memory-bandwidth terms
(`weights_read_s`, `kv_read_s_per_token`) x 2; `num_gpu_blocks` = (0.9 x 40 GiB - 16.2 GiB weights and activations)
/ 2 MiB per block = 9,945 instead of 28,150; `max_num_seqs` 256 (vLLM's default below 70 GiB).

    python -m loadtests.routing.mixed_pool --minutes 10 --compress 6 --big 2 --small 4
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from loadtests.routing.in_process import TRACE, RunStats, replay
from scorer.config import default_config, load_config
from scorer.device_hints import DeviceHints, DeviceInfo
from scorer.types import Endpoint
from sim.fleet.profile import EngineProfile, load_profile
from sim.fleet.trace import load_trace

GIB = 1 << 30
SCORER = Path(__file__).resolve().parents[2] / "scorer"


def mig_3g40gb(whole: EngineProfile) -> EngineProfile:
    compute, bandwidth = 132 / 60, 2.0
    return whole.model_copy(
        update={
            "name": whole.name + "-mig-3g.40gb",
            "linear_s_per_token": whole.linear_s_per_token * compute,
            "attn_s_per_token_pair": whole.attn_s_per_token_pair * compute,
            "decode_s_per_seq": whole.decode_s_per_seq * compute,
            "weights_read_s": whole.weights_read_s * bandwidth,
            "kv_read_s_per_token": whole.kv_read_s_per_token * bandwidth,
            "num_gpu_blocks": 9945,
            "max_num_seqs": 256,
        }
    )


def pool(big: int, small: int) -> list[tuple[Endpoint, EngineProfile]]:
    whole = load_profile()
    slice_ = mig_3g40gb(whole)
    out: list[tuple[Endpoint, EngineProfile]] = []
    for i in range(big + small):
        is_big = i < big
        device = DeviceInfo(
            f"gpu.nvidia.com/node-{i}/gpu-0" + ("" if is_big else "-mig-3g40gb"),
            node=f"node-{i}",
            type="gpu" if is_big else "mig",
            product="NVIDIA H100",
            memory_bytes=(80 if is_big else 40) * GIB,
            multiprocessors=132 if is_big else 60,
            mig_profile=None if is_big else "3g.40gb",
            fraction=1.0 if is_big else 60 / 132,
        )
        endpoint = Endpoint(f"10.0.0.{i + 1}:8000", f"vllm-{i}", hints=DeviceHints(f"node-{i}", (device,)))
        out.append((endpoint, whole if is_big else slice_))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="trace minutes to replay")
    parser.add_argument("--compress", type=float, default=6.0, help="time compression of the trace")
    parser.add_argument("--big", type=int, default=2, help="endpoints on a whole H100")
    parser.add_argument("--small", type=int, default=4, help="endpoints on a 3g.40gb MIG slice")
    args = parser.parse_args(argv)
    trace = load_trace(TRACE, max_seconds=args.minutes * 60)
    members = pool(args.big, args.small)
    runs = [("default-config.yaml", default_config()), ("dra-config.yaml", load_config(SCORER / "dra-config.yaml"))]
    print(
        f"trace: {len(trace)} requests, {args.minutes} min compressed {args.compress}x; "
        f"{args.big} whole H100 + {args.small} MIG 3g.40gb"
    )
    print("| profile | done | hit ratio | TTFT p50 s | p90 s | p99 s | mean e2e s | max/min | rejected | on H100s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for label, config in runs:
        stats = replay(label, config, trace, members, args.compress)
        share = sum(stats.per_server[: args.big]) / max(1, sum(stats.per_server))
        print(f"{stats.row()} {share:.3f} |", flush=True)
        results.append(stats)
    base, dra = (_summary(r) for r in results)
    print("dra-config / default-config: " + ", ".join(f"{k} {dra[k] / base[k]:.2f}" for k in base))


def _summary(stats: RunStats) -> dict[str, float]:
    q = statistics.quantiles(stats.ttft, n=100)
    return {"TTFT p50": q[49], "p90": q[89], "p99": q[98], "mean e2e": statistics.mean(stats.e2e)}


if __name__ == "__main__":
    main()
