"""Padding masks dit-sparse reads from a model's self-attention: key padding (HunyuanVideo) and the joint
query-and-key padding of HunyuanVideo 1.5, against dense SDPA with the same mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import dit_sparse as ds
from dit_sparse.integration.specs import SPECS
from dit_sparse.integration.state import SparseState, padding_lengths
from dit_sparse.layout import VideoLayout

LAYOUT = VideoLayout(3, 5, 4, text_len=9, text_position="suffix")  # 60 video tokens, then 9 text: N = 69
N = LAYOUT.num_tokens
HUNYUAN = next(spec for spec in SPECS if spec.name == "hunyuan_video")
KEEP = torch.tensor([N, N - 4])  # sample 1 pads its last 4 text tokens


def _keep() -> torch.Tensor:
    return torch.arange(N)[None, :] < KEEP[:, None]  # (2, N)


def _key_mask() -> torch.Tensor:
    return _keep()[:, None, None, :]  # (2, 1, 1, N)


def _joint_mask() -> torch.Tensor:
    keep = _keep()
    return (keep[:, :, None] & keep[:, None, :])[:, None]  # (2, 1, N, N): HunyuanVideo 1.5's


def test_lengths_of_key_and_joint_padding_masks():
    assert padding_lengths(_key_mask(), 2, N) == ([N, N - 4], None)
    assert padding_lengths(_joint_mask(), 2, N) == ([N, N - 4], [N, N - 4])
    assert padding_lengths(_key_mask()[1:].expand(2, 3, N, N), 2, N) == ([N - 4, N - 4], None)  # equal rows
    assert padding_lengths(torch.ones(1, 1, 1, N, dtype=torch.bool), 2, N) == ([N, N], None)


@pytest.mark.parametrize(
    "mask, message",
    [
        (torch.ones(2, 1, 1, N), "boolean"),
        (torch.ones(2, 1, 1, N - 1, dtype=torch.bool), "shape"),
        (torch.ones(3, 1, 1, N, dtype=torch.bool), "shape"),
        (torch.ones(2, 1, N, N, dtype=torch.bool).tril(), "shape"),  # causal: neither padding form
        (torch.ones(2, 1, 1, N, dtype=torch.bool).index_fill(-1, torch.tensor([0]), False), "come first"),
    ],
)
def test_other_masks_are_refused_with_a_message(mask, message):
    with pytest.raises(ValueError, match=message):
        padding_lengths(mask, 2, N)


@pytest.mark.parametrize("method", ["radial", "sparse_vdit"])
def test_keep_all_masks_equal_dense_sdpa_under_both_padding_masks(method):
    """With every block kept, sparse attention under a padding mask is dense SDPA under it: padded keys are
    not read, and under the joint mask padded queries give zeros, as SDPA gives them."""
    keep_all = {"dense_distance": 1000, "block_rule": "cover"}
    params = keep_all if method == "radial" else {"assignment": {0: ["dense"] * 2}}
    config = ds.SparseAttentionConfig(method, block_size=16, backend="reference", **params)
    state = SparseState(HUNYUAN, config, original_backends=[None])
    state.layout = LAYOUT
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, N, 8) for _ in range(3))
    for attn_mask in (_key_mask(), _joint_mask()):
        dense = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = state.attend(0, q, k, v, attn_mask=attn_mask, scale=None, dense_fn=lambda m=attn_mask: None)
        torch.testing.assert_close(out, dense, atol=1e-5, rtol=1e-5)
    assert not out[1, :, N - 4 :].any()  # the joint mask's padded queries


def test_skipped_heads_are_zero_on_padded_queries():
    config = ds.SparseAttentionConfig(
        "sparse_vdit", block_size=16, backend="reference", assignment={0: ["skip", "dense"]}
    )
    state = SparseState(HUNYUAN, config, original_backends=[None])
    state.layout = LAYOUT
    q, k, v = (torch.randn(2, 2, N, 8) for _ in range(3))
    out = state.attend(0, q, k, v, attn_mask=_joint_mask(), scale=None, dense_fn=lambda: None)
    torch.testing.assert_close(out[1, 0, 0], v[1, 0, : N - 4].mean(dim=0))
    assert not out[1, 0, N - 4 :].any()
