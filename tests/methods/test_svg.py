from __future__ import annotations

import torch

import dit_sparse as ds
from dit_sparse.integration.specs import SPECS
from dit_sparse.methods import AttentionCall, build_method
from dit_sparse.methods.svg import SVGMethod

WAN = next(spec for spec in SPECS if spec.name == "wan")
LAYOUT = ds.VideoLayout(6, 4, 4)  # 16 tokens a frame


def spatial_and_temporal_heads() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Head 0 attends within its frame, head 1 to its own pixel in every frame."""
    coords = LAYOUT.video_coordinates()  # (N, 3): f, h, w
    pixel = torch.nn.functional.one_hot(coords[:, 1] * 4 + coords[:, 2], 16).float()  # (N, 16)
    frame = torch.nn.functional.one_hot(coords[:, 0], 6).float()  # (N, 6)
    pad = torch.zeros(LAYOUT.num_tokens, 10)
    q = torch.stack(
        [
            torch.cat([frame * 100, pad, torch.zeros_like(pixel)], 1),
            torch.cat([torch.zeros_like(frame), pad, pixel * 100], 1),
        ]
    )
    k = torch.stack(
        [torch.cat([frame, pad, torch.zeros_like(pixel)], 1), torch.cat([torch.zeros_like(frame), pad, pixel], 1)]
    )
    v = torch.randn(2, LAYOUT.num_tokens, 32)
    return q[None], k[None], v[None]  # (1, 2, N, 32)


def run_plan(method, q, k, v):
    from dit_sparse.integration.state import _reorder
    from dit_sparse.layout import invert_permutation

    plan = method.plan_for(AttentionCall(0, 0, None, LAYOUT, q, k, v))
    qp, kp, vp = (_reorder(t, plan.permutation) for t in (q, k, v))
    out = ds.block_sparse_attention(qp, kp, vp, plan.mask, backend="reference")
    return _reorder(out, invert_permutation(plan.permutation)), plan


def test_heads_get_the_pattern_their_attention_has():
    method: SVGMethod = build_method(ds.SparseAttentionConfig("svg", block_size=16, temporal_width=6), WAN)
    q, k, v = spatial_and_temporal_heads()
    out, plan = run_plan(method, q, k, v)
    assert method.last_choice[0] == ["spatial", "temporal"]
    assert plan.permutation.shape == (2, LAYOUT.num_tokens)
    assert torch.equal(plan.permutation[1], LAYOUT.permutation("HWF"))
    # both heads' attention lies inside their chosen pattern, so the sparse output is close to dense
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert (out - dense).abs().max() < 1e-3
    assert plan.mask.density() < 0.5


def test_bands_covering_everything_reproduce_dense_attention_through_the_reordering():
    config = ds.SparseAttentionConfig("svg", block_size=16, spatial_width=10_000, temporal_width=10_000)
    method = build_method(config, WAN)
    q, k, v = (torch.randn(1, 2, LAYOUT.num_tokens, 32) for _ in range(3))
    out, _ = run_plan(method, q, k, v)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)
    assert method.searches == 1
