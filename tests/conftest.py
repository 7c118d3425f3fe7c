"""Shared fixtures: paths into the repository and ../shared, and a CLI runner."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HWCONFIGS = REPO / "hwconfigs"
GROUND_TRUTH = REPO.parent / "shared" / "ground-truth"


@pytest.fixture
def run_cli():
    """Run `memsim ...` in a subprocess, as a user does; returns the CompletedProcess."""
    def run(*args: str, check: bool = False) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "memsim.cli", *map(str, args)],
                              capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"memsim {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
        return proc
    return run


def ground_truth(relative: str) -> Path:
    """A file under ../shared/ground-truth, or skip the test with a clear message."""
    path = GROUND_TRUTH / relative
    if not path.exists():
        pytest.skip(f"measured data not present: {path} (../shared/ground-truth is absent here)")
    return path
