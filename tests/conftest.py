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


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
