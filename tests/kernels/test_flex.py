"""FlexAttention backend against its exact twin.

Compiling FlexAttention on a CPU takes 10-20 s per shape, so the tests share a few shapes and let
hypothesis vary the block tables (the tables are graph inputs: new contents do not recompile).
"""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import assert_within_tolerance, random_blocks
from conftest import HAS_CUDA
from hypothesis import given, settings
from hypothesis import strategies as st

import dit_sparse as ds

DEVICE = "cuda" if HAS_CUDA else "cpu"
pytestmark = pytest.mark.skipif(
    ds.backend_status(DEVICE)["flex"] is not None,
    reason=f"flex unavailable: {ds.backend_status(DEVICE)['flex']}",
)

B, H, N, D = 2, 2, 300, 64  # N is not a multiple of any block size


def qkv(dtype=torch.float32, n=N):
    return [torch.randn(B, H, n, D, device=DEVICE, dtype=dtype) for _ in range(3)]


@settings(max_examples=8, deadline=None)
@given(
    block=st.sampled_from([(64, 64), (128, 128), (128, 64)]),
    density=st.floats(0.05, 1.0),
    broadcast=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_tables_match_reference(block, density, broadcast, seed):
    g = torch.Generator().manual_seed(seed)
    bq, bk = block
    blocks = random_blocks(1 if broadcast else B, H, math.ceil(N / bq), math.ceil(N / bk), density, g)
    mask = ds.BlockSparseMask.from_dense(blocks.to(DEVICE), block, (N, N))
    q, k, v = qkv()
    with torch.no_grad():
        out = ds.block_sparse_attention(q, k, v, mask, backend="flex")
    assert_within_tolerance(out, q, k, v, mask)


def test_density_one_equals_dense_sdpa_and_new_tables_do_not_recompile():
    from torch._dynamo.utils import counters

    q, k, v = qkv()
    full = ds.BlockSparseMask.from_dense(torch.ones(1, H, 3, 3, dtype=torch.bool, device=DEVICE), 128, (N, N))
    out = ds.block_sparse_attention(q, k, v, full, backend="flex")
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)
    graphs = counters["stats"]["unique_graphs"]
    for density in (0.2, 0.6):
        mask = ds.BlockSparseMask.from_dense(random_blocks(1, H, 3, 3, density).to(DEVICE), 128, (N, N))
        assert_within_tolerance(ds.block_sparse_attention(q, k, v, mask, backend="flex"), q, k, v, mask)
    assert counters["stats"]["unique_graphs"] == graphs, "a new block table of the same shape recompiled"


def test_fp16_and_one_block_rows():
    blocks = torch.zeros(B, H, 5, 5, dtype=torch.bool)
    blocks[..., torch.arange(5), torch.randint(0, 5, (5,))] = True
    mask = ds.BlockSparseMask.from_dense(blocks.to(DEVICE), 64, (N, N))
    q, k, v = qkv(torch.float16)
    out = ds.block_sparse_attention(q, k, v, mask, backend="flex")
    assert out.dtype == torch.float16
    assert_within_tolerance(out, q, k, v, mask)


@pytest.mark.skipif(HAS_CUDA, reason="CPU-specific limits")
def test_cpu_limits_are_reported():
    q, k, v = qkv()
    mask = ds.BlockSparseMask.from_dense(torch.ones(1, H, 3, 3, dtype=torch.bool), 128, (N, N))
    with pytest.raises(ValueError, match="inference only"):
        ds.block_sparse_attention(q.clone().requires_grad_(), k, v, mask, backend="flex")
    with pytest.raises(ValueError, match="cannot return the LSE"):
        ds.block_sparse_attention(q, k, v, mask, backend="flex", return_lse=True)
    # auto takes the gather backend on a CPU, which returns the LSE too
    assert ds.select_backend(q, mask, return_lse=True) == "gather"
    assert ds.select_backend(q, mask) == "gather"
