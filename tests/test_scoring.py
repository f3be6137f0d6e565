from __future__ import annotations

import math

import pytest
import torch
from conftest import HAS_CUDA
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dit_sparse.scoring import block_attention_mass, row_logsumexp, select_blocks

DEVICE = "cuda" if HAS_CUDA else "cpu"


def explicit_mass(q, k, bq, bk):
    """Block mass from the full softmax matrix (N x N): the definition."""
    probs = (torch.matmul(q.double(), k.double().transpose(-2, -1)) / math.sqrt(q.shape[-1])).softmax(-1)
    n_q, n_k = probs.shape[-2:]
    nb_q, nb_k = math.ceil(n_q / bq), math.ceil(n_k / bk)
    padded = torch.nn.functional.pad(probs, (0, nb_k * bk - n_k, 0, nb_q * bq - n_q))
    sums = padded.view(*probs.shape[:2], nb_q, bq, nb_k, bk).sum(dim=(3, 5))
    rows = torch.tensor([min(bq, n_q - i * bq) for i in range(nb_q)], dtype=torch.float64)
    return sums / rows[:, None]


@settings(max_examples=10, deadline=None)
@given(
    n_q=st.integers(20, 200),
    n_k=st.integers(20, 200),
    block=st.sampled_from([(16, 16), (32, 16), (64, 32)]),
    backend=st.sampled_from(["torch", "triton", "fused"]),
    dtype=st.sampled_from([torch.float32, torch.float16]),
    seed=st.integers(0, 1000),
)
def test_mass_equals_the_explicit_softmax(n_q, n_k, block, backend, dtype, seed):
    assume(backend != "fused" or DEVICE == "cpu")  # the fused path is torch's CPU attention kernel
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 2, n_q, 32, generator=g).to(DEVICE, dtype)
    k = torch.randn(2, 2, n_k, 32, generator=g).to(DEVICE, dtype)
    mass = block_attention_mass(q, k, block_size=block, backend=backend)
    expected = explicit_mass(q, k, *block)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(mass.double(), expected, atol=tol, rtol=tol)
    torch.testing.assert_close(mass.sum(-1).double(), torch.ones_like(expected[..., 0]), atol=tol, rtol=tol)


def test_streaming_lse_and_its_reuse():
    q, k = torch.randn(1, 2, 300, 16), torch.randn(1, 2, 300, 16)
    scores = q @ k.transpose(-2, -1) / 4.0
    lse = row_logsumexp(q, k, chunk=64)
    torch.testing.assert_close(lse, torch.logsumexp(scores, -1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        block_attention_mass(q, k, block_size=64, lse=lse), block_attention_mass(q, k, block_size=64)
    )
    with pytest.raises(ValueError, match=r"lse must be \(B, H, Nq\)"):
        block_attention_mass(q, k, lse=lse[:, :1])


def test_fused_cpu_mass_returns_its_lse_and_follows_a_cached_one():
    q, k = torch.randn(2, 2, 333, 8), torch.randn(2, 2, 290, 8)  # more kv blocks (10) than head dims (8)
    mass, lse = block_attention_mass(q, k, block_size=32, backend="fused", return_lse=True)
    torch.testing.assert_close(mass, block_attention_mass(q, k, block_size=32, backend="torch"), atol=1e-6, rtol=0)
    torch.testing.assert_close(lse, row_logsumexp(q, k, chunk=64), atol=1e-5, rtol=0)
    stale = lse + torch.rand_like(lse)  # e.g. cached at an earlier step: masses follow the definition with it
    torch.testing.assert_close(
        block_attention_mass(q, k, block_size=32, lse=stale, backend="fused"),
        block_attention_mass(q, k, block_size=32, lse=stale, backend="torch"),
        atol=1e-6,
        rtol=0,
    )
    assert torch.equal(block_attention_mass(q, k, block_size=32, lse=stale, return_lse=True)[1], stale)
    with pytest.raises(ValueError, match="fused block mass runs on a CPU"):
        block_attention_mass(q.to("meta"), k.to("meta"), backend="fused")


def test_selection_invariants():
    mass = torch.rand(2, 3, 8, 10).softmax(-1)
    for tau in (0.3, 0.7, 0.95):
        kept = select_blocks(mass, tau=tau)
        assert kept.any(-1).all()
        assert ((mass * kept).sum(-1) >= tau - 1e-6).all()
        # minimal: dropping the smallest kept block falls under tau
        smallest = torch.where(kept, mass, torch.inf).amin(-1)
        assert (((mass * kept).sum(-1) - smallest) < tau + 1e-6).all()
    assert (select_blocks(mass, fraction=0.25).sum(-1) == 3).all()  # ceil(0.25 * 10)
    assert (select_blocks(mass, top_k=2, min_blocks_per_row=4).sum(-1) == 4).all()
    with pytest.raises(ValueError, match="exactly one of"):
        select_blocks(mass, tau=0.5, fraction=0.5)
    with pytest.raises(ValueError, match=r"tau must be in \(0, 1\]"):
        select_blocks(mass, tau=1.5)


def explicit_antidiagonal(q, k, block, stride):
    """Softmax over tiles of the explicit antidiagonal sums of the padded q k^T, summed per block."""
    n_q, n_k = q.shape[2], k.shape[2]
    nb_q, nb_k = math.ceil(n_q / block), math.ceil(n_k / block)
    qp = torch.nn.functional.pad(q.double(), (0, 0, 0, nb_q * block - n_q))
    kp = torch.nn.functional.pad(k.double(), (0, 0, 0, nb_k * block - n_k))
    full = qp @ kp.transpose(-2, -1)
    r, c = torch.arange(qp.shape[2] // stride), torch.arange(kp.shape[2] // stride)
    sums = sum(full[:, :, (r * stride + stride - 1 - o)[:, None], (c * stride + o)[None, :]] for o in range(stride))
    sums = sums / math.sqrt(q.shape[-1]) / stride
    probs = sums.masked_fill(~(c * stride < n_k), float("-inf")).softmax(-1)
    per = block // stride
    out = torch.zeros(*q.shape[:2], nb_q, nb_k, dtype=torch.float64)
    for i in range(nb_q):
        rows = min(per, math.ceil((n_q - i * block) / stride))
        out[:, :, i] = probs[:, :, i * per : i * per + rows].reshape(*q.shape[:2], rows, nb_k, per).sum((2, 4)) / rows
    return out


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize(("n_q", "n_k", "block", "stride"), [(150, 130, 64, 4), (64, 64, 32, 2), (97, 200, 128, 8)])
def test_antidiagonal_scores_match_the_definition(n_q, n_k, block, stride, backend):
    from dit_sparse.scoring import antidiagonal_block_scores

    q, k = torch.randn(2, 2, n_q, 16), torch.randn(2, 2, n_k, 16)
    scores = antidiagonal_block_scores(q.to(DEVICE), k.to(DEVICE), block_size=block, stride=stride, backend=backend)
    scores = scores.cpu()
    torch.testing.assert_close(scores.double(), explicit_antidiagonal(q, k, block, stride), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores.sum(-1), torch.ones(scores.shape[:-1]), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="must be a multiple of stride"):
        antidiagonal_block_scores(q, k, block_size=block, stride=3)


def test_auto_mass_on_a_cpu_takes_fused_for_few_blocks_and_streaming_for_many():
    """The fused mass costs ~ nK; past nK = 2.5 D the streaming one is faster (benchmarks/mass_backends.py)."""
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 2, 512, 8, generator=g) for _ in range(2))
    few = block_attention_mass(q, k, block_size=32, backend="auto")  # 16 blocks <= 20
    assert torch.equal(few, block_attention_mass(q, k, block_size=32, backend="fused"))
    many = block_attention_mass(q, k, block_size=16, backend="auto")  # 32 blocks > 20
    assert torch.equal(many, block_attention_mass(q, k, block_size=16, backend="torch"))
