"""The CPU gather backend against its exact twin: random per-head and per-batch tables, ragged N, the LSE."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import assert_within_tolerance, exact_attention, random_blocks
from hypothesis import given, settings
from hypothesis import strategies as st

import dit_sparse as ds
from dit_sparse.kernels import gather as gather_module
from dit_sparse.scoring import select_blocks

pytestmark = pytest.mark.skipif(
    ds.backend_status("cpu")["gather"] is not None, reason=f"gather unavailable: {ds.backend_status('cpu')['gather']}"
)


def _qkv(batch, heads, n_q, n_k, dim, dtype=torch.float32, generator=None):
    q = torch.randn(batch, heads, n_q, dim, generator=generator).to(dtype)
    k = torch.randn(batch, heads, n_k, dim, generator=generator).to(dtype)
    v = torch.randn(batch, heads, n_k, dim, generator=generator).to(dtype)
    return q, k, v


@settings(max_examples=40, deadline=None)
@given(
    block=st.sampled_from([(64, 64), (128, 128), (128, 64), (64, 128), (32, 16)]),
    n_q=st.integers(1, 400),
    n_k=st.integers(1, 400),
    dim=st.sampled_from([8, 32, 64]),
    density=st.floats(0.0, 1.0),
    batch=st.integers(1, 3),
    broadcast=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    seed=st.integers(0, 2**16),
)
def test_random_tables_match_the_exact_definition(block, n_q, n_k, dim, density, batch, broadcast, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    bq, bk = block
    n_q_blocks, n_k_blocks = math.ceil(n_q / bq), math.ceil(n_k / bk)
    heads = 2
    blocks = torch.rand(1 if broadcast else batch, heads, n_q_blocks, n_k_blocks, generator=g) < density
    mask = ds.BlockSparseMask.from_dense(blocks, block, (n_q, n_k), allow_empty_rows=True)
    q, k, v = _qkv(batch, heads, n_q, n_k, dim, dtype, g)
    with torch.no_grad():
        out, lse = ds.block_sparse_attention(q, k, v, mask, backend="gather", return_lse=True)
    assert out.shape == q.shape and out.dtype == dtype and lse.dtype == torch.float32
    assert_within_tolerance(out, q, k, v, mask)
    _, expected_lse = exact_attention(q, k, v, mask.token_mask())
    assert torch.equal(torch.isinf(lse), torch.isinf(expected_lse))  # empty rows: -inf
    finite = torch.isfinite(expected_lse)
    torch.testing.assert_close(
        lse[finite].double(), expected_lse[finite], atol=1e-4 if dtype == torch.float32 else 5e-2, rtol=0
    )
    assert not out[~finite].any(), "rows with no kept block must be zero"


def test_full_mask_equals_dense_sdpa_and_gathers_nothing(monkeypatch):
    q, k, v = _qkv(2, 3, 333, 333, 64)
    full = ds.BlockSparseMask.from_dense(torch.ones(1, 3, 3, 3, dtype=torch.bool), 128, (333, 333))
    monkeypatch.setattr(gather_module, "_row_groups", lambda *a: pytest.fail("a full mask must not be gathered"))
    with torch.no_grad():
        out, lse = ds.block_sparse_attention(q, k, v, full, backend="gather", return_lse=True)
    assert torch.equal(out, torch.nn.functional.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(lse, torch.logsumexp((q @ k.transpose(-2, -1)) / 8.0, dim=-1), atol=1e-5, rtol=0)


def test_per_batch_tables_and_chunks_of_rows(monkeypatch):
    # A tiny chunk budget makes every fused call take one row: the chunking must not change the result.
    monkeypatch.setattr(gather_module, "_CHUNK_BYTES", 1)
    q, k, v = _qkv(3, 2, 200, 260, 32)
    blocks = random_blocks(3, 2, 4, 5, 0.4)
    mask = ds.BlockSparseMask.from_dense(blocks, 64, (200, 260))
    with torch.no_grad():
        out = ds.block_sparse_attention(q, k, v, mask, backend="gather")
    assert_within_tolerance(out, q, k, v, mask)
    # each sample used its own table: sample 0's table on sample 1 gives another result
    other = ds.BlockSparseMask.from_dense(blocks[[0, 0, 0]], 64, (200, 260))
    assert not torch.allclose(out[1], ds.block_sparse_attention(q, k, v, other, backend="gather")[1])


@pytest.mark.parametrize(("n", "tail_column"), [(256, False), (230, True), (230, False)])
def test_rows_keeping_equal_counts_run_in_one_call_without_moving_q_or_the_output(monkeypatch, n, tail_column):
    """A top-fraction selection keeps as many blocks in every row: one fused call on q as it is. With a partial
    last block that only some rows keep, the rows split into two groups and take the general path."""
    g = torch.Generator().manual_seed(5)
    mass = torch.rand(2, 3, 4, 4, generator=g)
    if tail_column:
        mass[..., -1] = 2.0  # every row keeps the partial last block: still one group
    blocks = select_blocks(mass, fraction=0.5)
    mask = ds.BlockSparseMask.from_dense(blocks, 64, (n, n))
    q, k, v = _qkv(2, 3, n, n, 32, generator=g)
    expected_fast = n == 256 or tail_column
    calls = []
    original = gather_module.attend_groups

    def counting(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(gather_module, "attend_groups", counting)
    with torch.no_grad():
        out, lse = ds.block_sparse_attention(q, k, v, mask, backend="gather", return_lse=True)
    assert (not calls) == expected_fast
    assert_within_tolerance(out, q, k, v, mask)
    _, ref_lse = ds.block_sparse_attention(q, k, v, mask, backend="reference", return_lse=True)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-5)


def test_row_groups_are_cached_per_batch_size():
    mask = ds.BlockSparseMask.from_dense(random_blocks(1, 2, 3, 3, 0.5), 64, (150, 150))
    q, k, v = _qkv(1, 2, 150, 150, 16)
    with torch.no_grad():
        ds.block_sparse_attention(q, k, v, mask, backend="gather")
        groups = mask._derived[("gather_groups", 1)]
        ds.block_sparse_attention(q, k, v, mask, backend="gather")
        assert mask._derived[("gather_groups", 1)] is groups
        q2, k2, v2 = _qkv(2, 2, 150, 150, 16)
        assert_within_tolerance(ds.block_sparse_attention(q2, k2, v2, mask, backend="gather"), q2, k2, v2, mask)
    assert ("gather_groups", 2) in mask._derived


def test_strided_inputs_as_diffusers_passes_them():
    # The dispatcher hands (B, N, H, D) tensors; dit-sparse sees their (B, H, N, D) transposes.
    q, k, v = (torch.randn(2, 190, 4, 32).transpose(1, 2) for _ in range(3))  # (B, H, N, D) views
    mask = ds.BlockSparseMask.from_dense(random_blocks(2, 4, 3, 3, 0.5), 64, (190, 190))
    with torch.no_grad():
        out = ds.block_sparse_attention(q, k, v, mask, backend="gather")
    assert_within_tolerance(out, q, k, v, mask)


def test_auto_picks_gather_on_a_cpu_and_a_full_mask_runs_dense():
    q, k, v = _qkv(1, 2, 256, 256, 32)
    sparse = ds.BlockSparseMask.from_dense(random_blocks(1, 2, 4, 4, 0.3), 64, (256, 256))
    assert ds.attention.select_backend(q, sparse, return_lse=True) == "gather"
    full = ds.BlockSparseMask.from_dense(torch.ones(1, 2, 4, 4, dtype=torch.bool), 64, (256, 256))
    assert full.is_full() and not sparse.is_full()
    with torch.no_grad():
        out = ds.block_sparse_attention(q, k, v, full)
    assert torch.equal(out, torch.nn.functional.scaled_dot_product_attention(q, k, v))


def test_inference_only_is_reported():
    q, k, v = _qkv(1, 2, 64, 64, 16)
    mask = ds.BlockSparseMask.from_dense(random_blocks(1, 2, 1, 1, 1.0), 64, (64, 64))
    with pytest.raises(ValueError, match="inference only"):
        ds.block_sparse_attention(q.requires_grad_(), k, v, mask, backend="gather")


def test_gather_buffers_stay_within_the_chunk_budget():
    # N = 8,192: an N x N float map per head would be 256 MiB; K and V are gathered in bounded chunks.
    n, heads, dim = 8192, 2, 32
    q, k, v = _qkv(1, heads, n, n, dim)
    mask = ds.BlockSparseMask.from_dense(random_blocks(1, heads, 64, 64, 0.5), 128, (n, n))
    gather_module._workspace.__dict__.pop("buffers", None)
    with torch.no_grad():
        ds.block_sparse_attention(q, k, v, mask, backend="gather")
    buffers = gather_module._workspace.buffers
    kv_bytes = sum(buffers[(name, torch.float32)].numel() * 4 for name in ("k", "v"))
    assert kv_bytes <= gather_module._CHUNK_BYTES
    assert buffers[("q", torch.float32)].numel() * 4 <= gather_module._CHUNK_BYTES


def test_buffers_made_under_inference_mode_do_not_break_later_calls():
    """The reused gather buffers of a call under torch.inference_mode() are inference tensors; a later call
    outside it (e.g. a pipeline under no_grad) must not write into them."""
    q = torch.randn(1, 2, 256, 16)
    mask = ds.BlockSparseMask.from_dense(torch.eye(4, dtype=torch.bool).expand(1, 2, 4, 4).contiguous(), 64)
    with torch.inference_mode():
        inside = ds.block_sparse_attention(q, q, q, mask, backend="gather")
    with torch.no_grad():
        outside = ds.block_sparse_attention(q, q, q, mask, backend="gather")
    assert torch.equal(inside, outside)
