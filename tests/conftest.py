"""Test set-up: no network, and Triton kernels in the CPU interpreter when there is no GPU.

TRITON_INTERPRET is read when a kernel is first compiled, which dit_sparse defers to first use, so
setting it here (before any test runs a kernel) is enough.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")

# Under pytest-xdist every worker is its own process: with torch's default of one thread per core, n workers
# on n cores run n x n OpenMP threads, which spin against each other (tiny pipelines ran 5-10x slower so).
if os.environ.get("PYTEST_XDIST_WORKER") and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    torch.set_num_threads(_threads)
    os.environ["OMP_NUM_THREADS"] = str(_threads)  # processes a test starts compute as this one does


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# Inputs tried by the fuzz tests (tests/test_fuzz.py records them per test), summed in the terminal summary.
_FUZZ_INPUTS: dict[str, int] = {}


def pytest_runtest_logreport(report) -> None:
    if report.when == "call":
        for name, value in report.user_properties:
            if name == "fuzz_inputs":
                _FUZZ_INPUTS[report.nodeid.split("::")[-1]] = value


def pytest_terminal_summary(terminalreporter) -> None:
    if _FUZZ_INPUTS:
        each = ", ".join(f"{name} {count}" for name, count in sorted(_FUZZ_INPUTS.items()))
        terminalreporter.write_line(f"fuzzing: {sum(_FUZZ_INPUTS.values())} inputs tried ({each})")
