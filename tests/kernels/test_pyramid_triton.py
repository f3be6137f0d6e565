"""The Triton pyramid-attention kernel against its exact twin, ``reference_pyramid_attention``.

Under TRITON_INTERPRET=1 on a CPU (fp32, fp16), natively on a GPU. Tolerance (STYLE.md): the kernel's error
against the fp32 definition is at most twice that of PyTorch computing the same in the kernel's dtype (the
``gather`` path: torch's fused CPU attention over the gathered keys of every level) plus a tiny atol.
"""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import DEVICE, make_inputs, random_blocks
from conftest import HAS_CUDA, requires_cuda
from hypothesis import given, settings
from hypothesis import strategies as st

import dit_sparse as ds
from dit_sparse.attention import pyramid_attention
from dit_sparse.kernels.pyramid import (
    gather_pyramid_attention,
    reference_pyramid_attention,
    triton_pyramid_attention,
)
from dit_sparse.levels import DROPPED, LevelMask


def random_levels(batch, heads, n_q_blocks, n_kv_blocks, max_level, density, generator):
    """Levels in ``[-1, max_level]``, about ``density`` of the blocks read, every row reading at least one."""
    shape = (batch, heads, n_q_blocks, n_kv_blocks)
    levels = torch.randint(0, max_level + 1, shape, generator=generator)
    levels[torch.rand(shape, generator=generator) > density] = DROPPED
    first = torch.randint(0, n_kv_blocks, (*shape[:3], 1), generator=generator)
    return levels.scatter(-1, first, torch.randint(0, max_level + 1, (*shape[:3], 1), generator=generator))


def assert_matches_reference(out, lse, q, k, v, mask, scale):
    """Output by the tolerance rule above; LSE against the twin in the inputs' dtype (same pooled tables)."""
    kernel_dtype = torch.bfloat16 if q.is_cuda and q.dtype == torch.float32 else q.dtype  # fp32 on a GPU: bf16 dots
    expected, _ = reference_pyramid_attention(q.float(), k.float(), v.float(), mask, scale, False)
    torch_err = 0.0
    if kernel_dtype != torch.float32:
        same_dtype = (t.cpu().to(kernel_dtype) for t in (q, k, v))
        torch_out, _ = gather_pyramid_attention(*same_dtype, mask.to("cpu"), scale, False)
        torch_err = (torch_out.float() - expected.cpu()).abs().max().item()
    atol = {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-3}[kernel_dtype]
    err = (out.float() - expected).abs().max().item()
    assert err <= 2 * torch_err + atol, f"kernel error {err:.3e} vs torch {kernel_dtype} error {torch_err:.3e}"
    _, expected_lse = reference_pyramid_attention(q, k, v, mask, scale, True)
    assert lse.dtype == torch.float32 and lse.shape == q.shape[:3]
    tol = 1e-5 if kernel_dtype == torch.float32 else 2e-3
    torch.testing.assert_close(lse, expected_lse, atol=tol, rtol=tol)


@settings(max_examples=20, deadline=None)
@given(
    n_q=st.integers(17, 300),
    n_k=st.integers(17, 300),
    block=st.sampled_from([(64, 64), (128, 64), (64, 128)]),
    max_level=st.integers(1, 3),
    density=st.floats(0.2, 1.0),
    batch=st.sampled_from([1, 2]),
    broadcast=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float16]),
    seed=st.integers(0, 2**16),
)
def test_random_level_tables_match_reference(n_q, n_k, block, max_level, density, batch, broadcast, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    H, D = 2, 32
    bq, bk = block
    levels = random_levels(1 if broadcast else batch, H, math.ceil(n_q / bq), math.ceil(n_k / bk), max_level,
                           density, g)  # fmt: skip
    mask = LevelMask(levels.to(DEVICE), block, (n_q, n_k), max_level=max_level)
    q, k, v = make_inputs(batch, H, n_q, n_k, D, dtype)
    out, lse = triton_pyramid_attention(q, k, v, mask, 0.3, True)
    assert out.shape == q.shape and out.dtype == dtype
    assert_matches_reference(out, lse, q, k, v, mask, 0.3)


@pytest.mark.parametrize("block, max_level", [(32, 5), (64, 3)])
def test_levels_with_fewer_keys_per_block_than_a_tile(block, max_level):
    """Deep levels hold fewer pooled keys per block than a dot's 16 columns; the tile's extra columns are masked."""
    n = 3 * block + 3  # a partial last block of 3 tokens: its groups are short or empty at every level
    levels = random_levels(1, 2, 4, 4, max_level, 0.7, torch.Generator().manual_seed(1))
    levels[..., -1] = max_level  # the partial block at the deepest level
    mask = LevelMask(levels.to(DEVICE), block, (n, n), max_level=max_level)
    q, k, v = make_inputs(1, 2, n, n, 32, torch.float32)
    out, lse = triton_pyramid_attention(q, k, v, mask, 0.2, True)
    assert_matches_reference(out, lse, q, k, v, mask, 0.2)


def test_empty_rows_and_rows_reading_only_the_partial_last_block():
    n = 129  # kv blocks of 64: the last one holds one token
    levels = torch.tensor([[[[-1, -1, 2], [-1, -1, -1], [1, 0, 2]]]], dtype=torch.int8)
    mask = LevelMask(levels.to(DEVICE), 64, (n, n), max_level=2, allow_empty_rows=True)
    q, k, v = make_inputs(1, 1, n, n, 32, torch.float32)
    out, lse = triton_pyramid_attention(q, k, v, mask, 0.2, True)
    assert torch.all(out[..., 64:128, :] == 0) and torch.isneginf(lse[..., 64:128]).all()
    # Rows of q block 0 read one pooled key standing for one token: all their mass is on it.
    torch.testing.assert_close(out[..., :64, :], v[..., 128:, :].expand(-1, -1, 64, -1))
    assert torch.isfinite(out).all() and torch.isfinite(lse[..., :64]).all() and torch.isfinite(lse[..., 128:]).all()
    assert_matches_reference(out, lse, q, k, v, mask, 0.2)


def test_binary_level_mask_equals_block_sparse_attention():
    n, H = 250, 2
    blocks = ds.BlockSparseMask.from_dense(random_blocks(2, H, 4, 4, 0.5).to(DEVICE), 64, (n, n))
    mask = LevelMask.from_block_mask(blocks, max_level=2)
    q, k, v = make_inputs(2, H, n, n, 32, torch.float32)
    out, lse = triton_pyramid_attention(q, k, v, mask, 0.2, True)
    expected, expected_lse = ds.block_sparse_attention(q, k, v, blocks, backend="triton", scale=0.2, return_lse=True)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(lse, expected_lse, atol=1e-6, rtol=1e-6)


def test_public_backend_with_strided_inputs_a_padded_head_dim_and_cross_lengths():
    n_q, n_k, D = 130, 260, 80  # head dim padded to 128 inside the kernel
    levels = random_levels(2, 2, 3, 5, 2, 0.6, torch.Generator().manual_seed(3))
    levels[0, 0, 0, 0] = 1  # not binary: the pyramid kernel, not the block-sparse one
    mask = LevelMask(levels.to(DEVICE), 64, (n_q, n_k), max_level=2)
    q, k, v = make_inputs(2, 2, n_q, n_k, D, torch.float32, layout="bnhd")
    assert not q.is_contiguous()
    out, lse = pyramid_attention(q, k, v, mask, backend="triton", return_lse=True)
    assert_matches_reference(out, lse, q, k, v, mask, 1 / math.sqrt(D))


def test_torch_compile_traces_the_custom_op():
    levels = random_levels(1, 2, 2, 2, 2, 1.0, torch.Generator().manual_seed(4))
    levels[0, 0, 0, 0] = 1
    mask = LevelMask(levels.to(DEVICE), 64, (128, 128), max_level=2)
    q, k, v = make_inputs(1, 2, 128, 128, 32, torch.float32)

    def layer(q, k, v):
        return pyramid_attention(q * 2.0, k, v, mask, backend="triton") + 1.0

    # The eager call first: the mask's checks read its values (a sync), once, and cache what they find.
    expected = layer(q, k, v)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v), expected)


def test_triton_backend_says_what_it_cannot_run():
    mask = LevelMask(torch.tensor([[[[1]]]], dtype=torch.int8, device=DEVICE), 64, (64, 64))
    q = torch.randn(1, 1, 64, 32, device=DEVICE, requires_grad=True)
    with pytest.raises(ValueError, match="inference only; use backend='reference'"):
        pyramid_attention(q, q, q, mask, backend="triton")
    with pytest.raises(ValueError, match="head dims up to 256"):
        pyramid_attention(*(torch.randn(1, 1, 64, 320, device=DEVICE) for _ in range(3)), mask, backend="triton")
    if not HAS_CUDA:
        bf16 = torch.randn(1, 1, 64, 32, dtype=torch.bfloat16)
        with pytest.raises(ValueError, match="bf16 is silently wrong under the Triton interpreter"):
            pyramid_attention(bf16, bf16, bf16, mask, backend="triton")


@requires_cuda
def test_auto_picks_triton_on_a_gpu():
    levels = random_levels(1, 2, 2, 2, 1, 1.0, torch.Generator().manual_seed(5))
    levels[0, 0, 0, 0] = 1
    mask = LevelMask(levels.cuda(), 64, (128, 128), max_level=1)
    q, k, v = make_inputs(1, 2, 128, 128, 64, torch.bfloat16)
    torch.testing.assert_close(pyramid_attention(q, k, v, mask), pyramid_attention(q, k, v, mask, backend="triton"))
