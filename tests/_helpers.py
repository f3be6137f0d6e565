"""Shared test helpers: the exact attention definition and the kernel tolerance rule of STYLE.md."""

from __future__ import annotations

import math

import torch

import dit_sparse as ds

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # where the kernel tests run


def make_inputs(B, H, Nq, Nk, D, dtype, layout="bhnd"):
    """Random q ``(B, H, Nq, D)``, k and v ``(B, H, Nk, D)`` on ``DEVICE``; ``layout="bnhd"`` makes them the strided
    views a diffusers processor holds."""
    q = torch.randn(B, H, Nq, D, device=DEVICE).to(dtype)
    k = torch.randn(B, H, Nk, D, device=DEVICE).to(dtype)
    v = torch.randn(B, H, Nk, D, device=DEVICE).to(dtype)
    if layout == "bnhd":  # what a diffusers processor holds, transposed: strided, not contiguous
        q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    return q, k, v


def exact_attention(q, k, v, token_mask, scale=None):
    """fp64 softmax attention over the kept token pairs; empty rows give zeros and LSE -inf."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q.double(), k.double().transpose(-2, -1)) * scale  # (B, H, Nq, Nk)
    scores = scores.masked_fill(~token_mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, Nq)
    probs = torch.exp(scores - lse[..., None]).nan_to_num(0.0)
    return probs @ v.double(), lse


def assert_within_tolerance(out, q, k, v, mask, *, scale=None, atol=None):
    """Error against fp64 <= 2 x the error of PyTorch doing the same in the kernel's dtype, + a tiny atol."""
    expected, _ = exact_attention(q, k, v, mask.token_mask(), scale)
    torch_same_dtype = ds.block_sparse_attention(q, k, v, mask, backend="reference", scale=scale)
    if atol is None:
        atol = {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-3}[q.dtype]
    err = (out.double() - expected).abs().max().item()
    torch_err = (torch_same_dtype.double() - expected).abs().max().item()
    assert err <= 2 * torch_err + atol, f"kernel error {err:.3e} vs torch {q.dtype} error {torch_err:.3e}"


def random_blocks(batch, heads, n_q_blocks, n_kv_blocks, density, generator=None):
    """Random block map with every row keeping at least one block."""
    blocks = torch.rand(batch, heads, n_q_blocks, n_kv_blocks, generator=generator) < density
    first = torch.randint(0, n_kv_blocks, (batch, heads, n_q_blocks, 1), generator=generator)
    return blocks.scatter(-1, first, True)


def reduce_to_blocks(token_mask, block):
    """Block map of an (N, N) token mask: a block is kept iff any token pair in it is."""
    n = token_mask.shape[0]
    nb = math.ceil(n / block)
    padded = torch.zeros(nb * block, nb * block, dtype=torch.bool)
    padded[:n, :n] = token_mask
    return padded.view(nb, block, nb, block).any(dim=3).any(dim=1)
