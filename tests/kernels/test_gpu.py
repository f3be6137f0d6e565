"""GPU-only checks: bf16 (which the Triton interpreter cannot run) and a coarse speed ordering.

The speed check is a sanity bound (10% density must beat dense by any margin), not a goal; speed goals
are measured by ``benchmarks/attention.py``.
"""

from __future__ import annotations

import pytest
import torch
from _helpers import assert_within_tolerance, random_blocks
from conftest import HAS_CUDA, requires_cuda

import dit_sparse as ds

pytestmark = [requires_cuda, pytest.mark.gpu]

FLEX_FLASH_REASON = ds.backend_status("cuda")["flex-flash"] if HAS_CUDA else "needs a CUDA GPU"


@pytest.mark.parametrize("backend", ["triton", "flex"])
@pytest.mark.parametrize("D", [64, 128])
def test_bf16_matches_reference(backend, D):
    n, H = 4000, 4
    blocks = random_blocks(1, H, 32, 32, 0.2).cuda()
    mask = ds.BlockSparseMask.from_dense(blocks, 128, (n, n))
    q, k, v = (torch.randn(2, H, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    out = ds.block_sparse_attention(q, k, v, mask, backend=backend)
    assert_within_tolerance(out, q, k, v, mask)


@pytest.mark.skipif(FLEX_FLASH_REASON is not None, reason=f"flex-flash unavailable: {FLEX_FLASH_REASON}")
@pytest.mark.parametrize("D", [64, 128])
def test_flex_flash_matches_reference_with_lse_and_an_empty_row(D):
    n, H = 4000, 4
    blocks = random_blocks(1, H, 32, 32, 0.2)
    blocks[0, 1, 5] = False  # one q block of one head keeps nothing: zeros out, LSE -inf
    mask = ds.BlockSparseMask.from_dense(blocks.cuda(), 128, (n, n))
    q, k, v = (torch.randn(2, H, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    with torch.no_grad():
        out, lse = ds.block_sparse_attention(q, k, v, mask, backend="flex-flash", return_lse=True)
    assert_within_tolerance(out, q, k, v, mask)
    _, ref_lse = ds.block_sparse_attention(q.float(), k.float(), v.float(), mask, backend="reference", return_lse=True)
    torch.testing.assert_close(lse, ref_lse, atol=2e-2, rtol=1e-2)
    assert bool((out[:, 1, 640:768] == 0).all())


def test_triton_lse_in_bf16():
    n, H = 1000, 2
    mask = ds.BlockSparseMask.from_dense(random_blocks(1, H, 8, 8, 0.3).cuda(), 128, (n, n))
    q, k, v = (torch.randn(1, H, n, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    _, lse = ds.block_sparse_attention(q, k, v, mask, backend="triton", return_lse=True)
    _, ref_lse = ds.block_sparse_attention(q.float(), k.float(), v.float(), mask, backend="reference", return_lse=True)
    torch.testing.assert_close(lse, ref_lse, atol=2e-2, rtol=1e-2)


def _time(fn, repeats=10):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def test_sparse_is_faster_than_dense_sdpa():
    from dit_sparse.bench.attention import random_block_mask

    n, H, D = 16384, 12, 128
    q, k, v = (torch.randn(1, H, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    mask = random_block_mask(1, H, n, 0.10, (128, 128), device="cuda")
    sparse = _time(lambda: ds.block_sparse_attention(q, k, v, mask, backend="triton"))
    dense = _time(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert sparse < dense, f"triton at 10% density took {sparse:.3f} ms, dense SDPA {dense:.3f} ms"


@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("layout", ["bhnd", "bnhd"])
def test_tma_kernel_bf16_matches_reference(D, layout):
    n, H = 4000, 4
    blocks = random_blocks(1, H, 32, 32, 0.2).cuda()
    mask = ds.BlockSparseMask.from_dense(blocks, 128, (n, n))
    q, k, v = (torch.randn(2, H, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    if layout == "bnhd":  # what a diffusers processor holds, transposed: rows H*D apart
        q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    out, lse = ds.block_sparse_attention(q, k, v, mask, backend="triton-tma", return_lse=True)
    assert_within_tolerance(out, q, k, v, mask)
    _, ref_lse = ds.block_sparse_attention(q.float(), k.float(), v.float(), mask, backend="reference", return_lse=True)
    torch.testing.assert_close(lse, ref_lse, atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("block", [64, 128, 256])
@pytest.mark.parametrize("D", [64, 128])
def test_block_mass_kernel_at_every_block_size(block, D):
    """The autotuned block-mass kernel launches at every mask block (256 / D 128 could not, before the reshape)
    and agrees with the streaming PyTorch twin; a partial last block on both axes."""
    from dit_sparse.scoring import block_attention_mass

    n, H = 3000, 2
    q, k = (torch.randn(1, H, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    mass = block_attention_mass(q, k, block_size=block, backend="triton")
    twin = block_attention_mass(q.float(), k.float(), block_size=block, backend="torch")
    torch.testing.assert_close(mass, twin, atol=2e-3, rtol=2e-2)
    torch.testing.assert_close(mass.sum(-1), torch.ones_like(mass[..., 0]), atol=2e-2, rtol=0)


def test_fp32_inputs_run_with_bf16_operands():
    n, H = 1000, 2
    mask = ds.BlockSparseMask.from_dense(random_blocks(1, H, 8, 8, 0.4).cuda(), 128, (n, n))
    q, k, v = (torch.randn(1, H, n, 64, device="cuda") for _ in range(3))
    out = ds.block_sparse_attention(q, k, v, mask, backend="triton")
    assert out.dtype == torch.float32
    expected = ds.block_sparse_attention(q, k, v, mask, backend="reference")
    torch.testing.assert_close(out, expected, atol=3e-2, rtol=3e-2)
