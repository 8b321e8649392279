"""The real VM load trace (Google cluster data, 5-minute CPU and memory utilization of 781 VMs over 24 hours)
as two numpy matrices, read once per process.

Why it exists: node pressure in the twin must rise and fall the way real VM load does, not as invented
curves (/work/shared/data/README.md). Each twin VM follows one trace VM: the one named by its
`sim.autonomic.io/load-trace` annotation, else one picked from a hash of (seed, namespace, name) so the
assignment is the same on every run with the same seed. `sample(rows, t)` interpolates linearly between the
5-minute points and wraps around the 24-hour period.

Columns: `vm`, `minute` (0..1435, step 5), `cpu_pct`, `mem_pct` (percent of the VM's own size; a few memory
values exceed 100 and are clipped, since a guest cannot hold more than its RAM).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TRACE_ENV = "AUTONOMIC_VM_LOAD_TRACE"
COLUMNS = ("vm", "minute", "cpu_pct", "mem_pct")


class TraceError(ValueError):
    pass


def default_trace_path() -> Path:
    """$AUTONOMIC_VM_LOAD_TRACE, else the shared data directory next to the repository."""
    env = os.environ.get(TRACE_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared/data/vm-load/gcd_vms_dev.csv.gz"


@dataclass(frozen=True, eq=False)
class VmLoadTrace:
    ids: tuple[str, ...]
    cpu: np.ndarray  # (VMs, samples): fraction of the VM's vCPUs in use, 0..1
    memory: np.ndarray  # (VMs, samples): fraction of the VM's memory in use, 0..1
    step_s: float  # seconds between samples
    index: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.index:
            object.__setattr__(self, "index", {vm: i for i, vm in enumerate(self.ids)})

    @property
    def period_s(self) -> float:
        return self.step_s * self.cpu.shape[1]

    def row(self, vm_id: str) -> int:
        try:
            return self.index[vm_id]
        except KeyError:
            raise TraceError(f"unknown load trace VM {vm_id!r} ({len(self.ids)} VMs in the trace)") from None

    def assign(self, seed: int, namespace: str, name: str) -> int:
        """A row picked by a stable hash: the same VM gets the same trace on every run with this seed."""
        digest = hashlib.blake2b(f"{seed}/{namespace}/{name}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % len(self.ids)

    def sample(self, rows: np.ndarray, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(cpu, memory) fractions of `rows` at trace time `t_s` seconds, linearly interpolated."""
        pos = (t_s % self.period_s) / self.step_s
        i0 = int(pos)
        frac = pos - i0
        i1 = (i0 + 1) % self.cpu.shape[1]
        rows = np.asarray(rows, dtype=np.intp)
        cpu = (1 - frac) * self.cpu[rows, i0] + frac * self.cpu[rows, i1]
        mem = (1 - frac) * self.memory[rows, i0] + frac * self.memory[rows, i1]
        return cpu, mem


def parse_trace(data: bytes) -> VmLoadTrace:
    """The CSV (already decompressed) as matrices; rows may come in any order, gaps are filled from the
    nearest earlier sample of the same VM."""
    header, _, body = data.partition(b"\n")
    names = [c.strip() for c in header.decode().split(",")]
    if any(c not in names for c in COLUMNS):
        raise TraceError(f"trace header must have columns {', '.join(COLUMNS)}; got {', '.join(names)}")
    cols = [names.index(c) for c in COLUMNS]
    lines = [line for line in body.split(b"\n") if line.strip()]
    if not lines:
        raise TraceError("the trace has no rows")
    try:
        numbers = np.loadtxt(io.BytesIO(b"\n".join(lines)), delimiter=",", usecols=cols[1:], ndmin=2)
    except ValueError as exc:
        raise TraceError(f"bad number in the trace: {exc}") from None
    vm_col = cols[0]
    vms = np.array([line.split(b",")[vm_col].strip().decode() for line in lines])
    ids, vm_rows = np.unique(vms, return_inverse=True)
    minutes = numbers[:, 0]
    steps = np.unique(np.diff(np.unique(minutes)))
    step_min = float(steps.min()) if len(steps) else 5.0
    first = minutes.min()
    col = np.rint((minutes - first) / step_min).astype(np.intp)
    cpu = np.full((len(ids), int(col.max()) + 1), np.nan)
    mem = cpu.copy()
    cpu[vm_rows, col] = numbers[:, 1]
    mem[vm_rows, col] = numbers[:, 2]
    for matrix in (cpu, mem):
        _fill_gaps(matrix)
    return VmLoadTrace(
        ids=tuple(str(v) for v in ids),
        cpu=np.clip(cpu / 100.0, 0.0, 1.0),
        memory=np.clip(mem / 100.0, 0.0, 1.0),
        step_s=step_min * 60.0,
    )


def _fill_gaps(m: np.ndarray) -> None:
    """Forward-fill NaNs along time, then back-fill leading ones (in place)."""
    missing = np.isnan(m)
    if not missing.any():
        return
    idx = np.where(~missing, np.arange(m.shape[1]), 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    m[:] = m[np.arange(m.shape[0])[:, None], idx]
    first_valid = np.argmax(~np.isnan(m), axis=1)
    for r in np.nonzero(np.isnan(m[:, 0]))[0]:
        m[r, : first_valid[r]] = m[r, first_valid[r]]


@functools.lru_cache(maxsize=4)
def _load(path: str) -> VmLoadTrace:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise TraceError(
            f"VM load trace not found at {path} ({exc.strerror}); set ${TRACE_ENV} or the scenario's load.traceFile"
        ) from None
    return parse_trace(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)


def load_vm_trace(path: str | Path | None = None) -> VmLoadTrace:
    """The trace at `path` (default: `default_trace_path()`), parsed once per process."""
    return _load(str(Path(path) if path is not None else default_trace_path()))
