"""Triton kernel against its exact twin; under TRITON_INTERPRET=1 on a CPU (fp32, fp16), natively on a GPU."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import DEVICE, assert_within_tolerance, exact_attention, make_inputs, random_blocks
from conftest import HAS_CUDA
from hypothesis import given, settings
from hypothesis import strategies as st

import dit_sparse as ds


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(17, 300),
    block=st.sampled_from([(64, 64), (128, 64), (64, 128), (128, 128)]),
    density=st.floats(0.1, 1.0),
    batch=st.sampled_from([1, 2]),
    broadcast=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float16]),
    seed=st.integers(0, 2**16),
)
def test_random_tables_match_reference(n, block, density, batch, broadcast, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    H, D = 2, 32
    bq, bk = block
    blocks = random_blocks(1 if broadcast else batch, H, math.ceil(n / bq), math.ceil(n / bk), density, g)
    mask = ds.BlockSparseMask.from_dense(blocks.to(DEVICE), block, (n, n))
    q, k, v = make_inputs(batch, H, n, n, D, dtype)
    out = ds.block_sparse_attention(q, k, v, mask, backend="triton")
    assert out.shape == q.shape and out.dtype == dtype
    assert_within_tolerance(out, q, k, v, mask)


def test_per_head_densities_differ_and_match():
    H, n = 4, 256
    blocks = torch.stack([random_blocks(1, 1, 4, 4, d)[0, 0] for d in (0.1, 0.3, 0.6, 1.0)])[None]
    mask = ds.BlockSparseMask.from_dense(blocks.to(DEVICE), 64, (n, n))
    densities = mask.density_per_head()[0]
    assert len(set(densities.tolist())) > 1
    q, k, v = make_inputs(1, H, n, n, 64, torch.float32)
    assert_within_tolerance(ds.block_sparse_attention(q, k, v, mask, backend="triton"), q, k, v, mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_density_one_equals_dense_sdpa(dtype):
    n = 200
    mask = ds.BlockSparseMask.from_dense(torch.ones(1, 2, 4, 4, dtype=torch.bool, device=DEVICE), 64, (n, n))
    q, k, v = make_inputs(2, 2, n, n, 64, dtype)
    out = ds.block_sparse_attention(q, k, v, mask, backend="triton")
    dense = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(out.float(), dense, atol=tol, rtol=tol)


def test_one_block_rows_and_lse():
    n, H = 300, 2
    blocks = torch.zeros(1, H, 3, 3, dtype=torch.bool)
    blocks[..., torch.arange(3), torch.tensor([2, 0, 1])] = True  # exactly one block per row
    mask = ds.BlockSparseMask.from_dense(blocks.to(DEVICE), 128, (n, n))
    q, k, v = make_inputs(1, H, n, n, 64, torch.float32)
    out, lse = ds.block_sparse_attention(q, k, v, mask, backend="triton", return_lse=True)
    expected, expected_lse = exact_attention(q, k, v, mask.token_mask())
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    assert lse.dtype == torch.float32 and lse.shape == (1, H, n)
    torch.testing.assert_close(lse.double(), expected_lse, atol=1e-5, rtol=1e-5)
    # natural-log units: the same as torch.logsumexp of the kept scaled scores
    scores = (q[0, 0, :1].double() @ k[0, 0, 256:].double().T) / math.sqrt(64)  # row 0 keeps kv block 2
    assert lse[0, 0, 0].item() == pytest.approx(torch.logsumexp(scores, -1).item(), abs=1e-5)


def test_empty_rows_give_zeros_and_minus_inf_lse():
    blocks = torch.tensor([[[[True, False], [False, False]]]], device=DEVICE)
    mask = ds.BlockSparseMask.from_dense(blocks, 64, (100, 100), allow_empty_rows=True)
    q, k, v = make_inputs(1, 1, 100, 100, 32, torch.float32)
    out, lse = ds.block_sparse_attention(q, k, v, mask, backend="triton", return_lse=True)
    assert torch.all(out[..., 64:, :] == 0) and torch.all(lse[..., 64:] == float("-inf"))
    assert torch.isfinite(out).all() and torch.isfinite(lse[..., :64]).all()


@pytest.mark.parametrize("D", [16, 80, 128])
def test_head_dims_strides_and_cross_lengths(D):
    nq, nk = 130, 260  # q and kv of different lengths, both with tails
    blocks = random_blocks(2, 2, 3, 5, 0.5)
    mask = ds.BlockSparseMask.from_dense(blocks.to(DEVICE), 64, (nq, nk))
    q, k, v = make_inputs(2, 2, nq, nk, D, torch.float32, layout="bnhd")
    assert not q.is_contiguous()
    out = ds.block_sparse_attention(q, k, v, mask, backend="triton", scale=0.3)
    assert_within_tolerance(out, q, k, v, mask, scale=0.3)


def test_torch_compile_traces_the_custom_op():
    mask = ds.BlockSparseMask.from_dense(random_blocks(1, 2, 2, 2, 0.5).to(DEVICE), 64, (128, 128))
    q, k, v = make_inputs(1, 2, 128, 128, 32, torch.float32)

    def layer(q, k, v):
        return ds.block_sparse_attention(q * 2.0, k, v, mask, backend="triton") + 1.0

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v), layer(q, k, v))


@pytest.mark.skipif(HAS_CUDA, reason="checks the interpreter's bf16 guard")
def test_bf16_is_refused_under_the_interpreter():
    mask = ds.BlockSparseMask.from_dense(torch.ones(1, 1, 1, 1, dtype=torch.bool), 64, (64, 64))
    q = torch.randn(1, 1, 64, 32, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bf16 is silently wrong under the Triton interpreter"):
        ds.block_sparse_attention(q, q, q, mask, backend="triton")


# --------------------------------------------------------------------------------------------------
# the tensor-descriptor (TMA) variant: same twin, same inputs
# --------------------------------------------------------------------------------------------------
@settings(max_examples=8, deadline=None)
@given(
    n=st.integers(17, 300),
    block=st.sampled_from([(64, 64), (128, 64), (64, 128), (128, 128)]),
    density=st.floats(0.1, 1.0),
    batch=st.sampled_from([1, 2]),
    broadcast=st.booleans(),
    layout=st.sampled_from(["bhnd", "bnhd"]),
    seed=st.integers(0, 2**16),
)
def test_tma_kernel_matches_reference(n, block, density, batch, broadcast, layout, seed):
    g = torch.Generator().manual_seed(seed)
    H, D = 2, 64
    bq, bk = block
    blocks = random_blocks(1 if broadcast else batch, H, math.ceil(n / bq), math.ceil(n / bk), density, g)
    mask = ds.BlockSparseMask.from_dense(blocks.to(DEVICE), block, (n, n))
    dtype = torch.bfloat16 if HAS_CUDA else torch.float16
    q, k, v = make_inputs(batch, H, n, n, D, dtype, layout)
    out, lse = ds.block_sparse_attention(q, k, v, mask, backend="triton-tma", return_lse=True)
    assert out.shape == q.shape and out.dtype == dtype
    assert_within_tolerance(out, q, k, v, mask)
    _, expected_lse = exact_attention(q, k, v, mask.token_mask())
    torch.testing.assert_close(lse.double(), expected_lse, atol=2e-3, rtol=2e-3)


def test_tma_kernel_empty_rows_and_the_partial_tail_only():
    n, H = 300, 2
    blocks = torch.zeros(1, H, 3, 3, dtype=torch.bool)
    blocks[0, :, 0, 2] = True  # q block 0 keeps only the partial last kv block; q block 1 keeps nothing
    blocks[0, :, 2, :] = True
    mask = ds.BlockSparseMask.from_dense(blocks.to(DEVICE), 128, (n, n), allow_empty_rows=True)
    q, k, v = make_inputs(1, H, n, n, 128, torch.float32)
    out, lse = ds.block_sparse_attention(q, k, v, mask, backend="triton-tma", return_lse=True)
    expected, expected_lse = exact_attention(q, k, v, mask.token_mask())
    torch.testing.assert_close(out.double(), expected.nan_to_num(), atol=1e-5, rtol=1e-5)
    assert torch.isneginf(lse[0, :, 128:256]).all()
    torch.testing.assert_close(lse[0, :, :128].double(), expected_lse[0, :, :128], atol=1e-5, rtol=1e-5)


def test_tma_backend_says_what_it_cannot_take():
    from dit_sparse.kernels import BACKENDS

    mask = ds.BlockSparseMask.from_dense(torch.ones(1, 1, 1, 1, dtype=torch.bool, device=DEVICE), 64, (64, 64))
    reason = BACKENDS["triton-tma"].unsupported_reason
    assert "head dims (64, 128)" in reason(torch.randn(1, 1, 64, 80, device=DEVICE), mask, False)
    strided = torch.randn(1, 1, 64, 128, device=DEVICE)[..., ::2]  # head dim not contiguous
    assert "contiguous head dim" in reason(strided, mask, False)
    with pytest.raises(ValueError, match="head dims"):
        ds.block_sparse_attention(*(torch.randn(1, 1, 64, 80, device=DEVICE) for _ in range(3)), mask,
                                  backend="triton-tma")  # fmt: skip
