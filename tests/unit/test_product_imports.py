"""The layer contracts of pyproject.toml ([tool.importlinter]) hold: the twins, harnesses and benchmarks import the
product, never the reverse; the services never import each other; the picker's packages import no scipy, matplotlib
or locust; `common` imports nothing of ours. `make lint` runs the same contracts; this test makes `make test` hold
them too. What a running service loads is checked in tests/integration/test_import_boundaries.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_import_contracts_are_kept() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is not installed (pip install -e '.[dev]')"
    done = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout and "3 kept" in done.stdout, done.stdout
