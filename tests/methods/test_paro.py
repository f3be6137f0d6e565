"""PAROAttention's order and mask selection against a token-level definition, planted heads, and the online method."""

from __future__ import annotations

import math

import pytest
import torch

import dit_sparse as ds
from dit_sparse.integration.specs import SPECS
from dit_sparse.kernels.quant import dequantize_per_block, quantize_per_block
from dit_sparse.layout import ORDERS
from dit_sparse.methods import AttentionCall, build_method
from dit_sparse.methods.paro import OrderStatistics, choose_orders, plan_from_orders

WAN = next(spec for spec in SPECS if spec.name == "wan")
BLOCK = 16


def _token_level_terms(calls, layout, order, density, bits):
    """Per head: recall and quantization error of ``order``, from explicit softmax and explicit quantization."""
    perm = layout.permutation(order)
    n = layout.num_tokens
    nb = math.ceil(n / BLOCK)
    mass = 0
    error = 0
    count = 0
    for q, k in calls:
        qp, kp = q[:, :, perm].double(), k[:, :, perm].double()
        probs = torch.softmax(qp @ kp.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)  # (B, H, N, N)
        padded = torch.zeros(*probs.shape[:2], nb * BLOCK, nb * BLOCK, dtype=torch.float64)
        padded[..., :n, :n] = probs
        per_block = padded.view(*probs.shape[:2], nb, BLOCK, nb, BLOCK).sum(dim=(3, 5))  # summed over rows and keys
        rows = torch.tensor([min(BLOCK, n - i * BLOCK) for i in range(nb)], dtype=torch.float64)
        mass = mass + (per_block / rows[:, None]).sum(0)  # (H, nQ, nK): mean over a block's rows, summed over batch
        count += q.shape[0]

        def relative(x):
            x_int, scales = quantize_per_block(x.float(), BLOCK, bits)
            diff = dequantize_per_block(x_int, scales, BLOCK).double() - x.double()
            return (diff.pow(2).sum(dim=(0, 2, 3)) / x.double().pow(2).sum(dim=(0, 2, 3))).sqrt()

        k_smooth = k - k.mean(dim=2, keepdim=True)  # K smoothed by its mean over tokens, before reordering
        error = error + 0.5 * (relative(qp) + relative(k_smooth[:, :, perm]))
    mass = mass / count
    keep = math.ceil(density * nb)
    top = mass.topk(keep, dim=-1).indices
    table = torch.zeros_like(mass, dtype=torch.bool).scatter(-1, top, True)
    text_blocks = torch.zeros(nb, dtype=torch.bool)
    for token in range(n):
        if not layout.video_start <= token < layout.video_start + layout.video_tokens:
            text_blocks[token // BLOCK] = True
    table |= text_blocks[None, :, None] | text_blocks[None, None, :]
    recall = (mass * table).sum(-1).mean(-1)
    return table, recall, error / len(calls)


@pytest.mark.parametrize(
    "layout",
    [ds.VideoLayout(4, 4, 6), ds.VideoLayout(3, 4, 5, text_len=7, text_position="prefix")],
    ids=["video", "text-prefix"],
)
@pytest.mark.parametrize("quant_weight", [0.0, 1.0, 20.0])
def test_choice_is_the_best_score_of_the_token_level_terms(layout, quant_weight):
    torch.manual_seed(0)
    calls = []
    for _ in range(2):
        q, k = torch.randn(2, 3, layout.num_tokens, 8), torch.randn(2, 3, layout.num_tokens, 8)
        k = k + torch.tensor([4.0, 0, 0, 0, 0, 0, 0, 0])  # a common channel offset, which smoothing removes
        calls.append((q, k))
    stats = OrderStatistics(layout, BLOCK, quant_bits=4)
    for q, k in calls:
        stats.update(q, k)
    heads = choose_orders(stats, density=0.3, quant_weight=quant_weight)
    terms = {order: _token_level_terms(calls, layout, order, 0.3, 4) for order in ORDERS}
    for h, head in enumerate(heads):
        scores = {order: (t[1][h] - quant_weight * t[2][h]).item() for order, t in terms.items()}
        best = max(scores, key=scores.get)
        assert head.order == best
        table, recall, error = terms[best]
        assert torch.equal(head.table, table[h])
        assert head.recall == pytest.approx(recall[h].item(), abs=1e-5)
        assert head.quant_error == pytest.approx(error[h].item(), rel=1e-4)
        assert head.score == pytest.approx(scores[best], abs=1e-4)


def _planted_heads(layout, scale=8.0):
    """Head 0 attends to the same pixel in every frame (temporal), head 1 to every pixel of its own frame."""
    generator = torch.Generator().manual_seed(0)
    pixel_codes = torch.nn.functional.normalize(
        torch.randn(layout.height * layout.width, 32, generator=generator), dim=-1
    )
    frame_codes = torch.nn.functional.normalize(torch.randn(layout.frames, 32, generator=generator), dim=-1)
    tokens = torch.arange(layout.num_tokens)
    temporal = pixel_codes[tokens % (layout.height * layout.width)]
    spatial = frame_codes[tokens // (layout.height * layout.width)]
    x = scale * torch.stack([temporal, spatial])[None]  # (1, 2, N, 32)
    return x, x.clone()


def test_planted_temporal_and_spatial_heads_get_frame_inner_and_frame_outer_orders():
    layout = ds.VideoLayout(8, 8, 8)  # 512 tokens, 32 blocks; 12.5% keeps 4 key blocks per row
    q, k = _planted_heads(layout)
    stats = OrderStatistics(layout, BLOCK)
    stats.update(q, k)
    temporal, spatial = choose_orders(stats, density=0.125)
    # the same pixel over 8 frames is one block once frames are innermost, 8 blocks in the native order
    assert temporal.order.endswith("F") and temporal.recall > 0.95
    # a frame is 4 contiguous blocks when frames are outermost
    assert spatial.order.startswith("F") and spatial.recall > 0.95
    native = choose_orders(_only(stats, "FHW"), density=0.125)
    assert native[0].recall < 0.6  # the temporal head without reordering loses about half its mass


def _only(stats, order):
    single = OrderStatistics(stats.layout, stats.block_size, stats.quant_bits)
    single.mass, single.quant_error = {order: stats.mass[order]}, {order: stats.quant_error[order]}
    single.count, single.calls = stats.count, stats.calls
    return single


def test_online_method_chooses_once_per_layer_and_context_then_reuses():
    layout = ds.VideoLayout(4, 4, 8)
    q, k = _planted_heads(layout)
    config = ds.SparseAttentionConfig("paro", block_size=BLOCK, density=0.125, quant="int8")
    method = build_method(config, WAN)
    plan = method.plan_for(AttentionCall(0, 0, "cond", layout, q, k, k))
    stats = OrderStatistics(layout, BLOCK)
    stats.update(q, k)
    heads = choose_orders(stats, density=0.125)
    for h, head in enumerate(heads):
        assert torch.equal(plan.permutation[h], layout.permutation(head.order))
        assert torch.equal(plan.mask.to_dense()[0, h], head.table)
    assert method.plan_for(AttentionCall(0, 5, "cond", layout, q * 0, k, k)) is plan  # later steps reuse
    assert method.plan_for(AttentionCall(0, 0, "uncond", layout, q, k, k)) is not plan  # another context chooses
    assert (method.searches, method.reuses) == (2, 1)
    method.reset()
    assert method.plan_for(AttentionCall(0, 0, "cond", layout, q, k, k)) is not plan


def test_plan_from_orders_runs_each_head_in_its_order():
    """The attention of a head in its order, inverted back, equals masked attention in the native order."""
    layout = ds.VideoLayout(4, 4, 6, text_len=5, text_position="suffix")
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, layout.num_tokens, 16) for _ in range(3))
    stats = OrderStatistics(layout, BLOCK)
    stats.update(q, k)
    heads = choose_orders(stats, density=0.4)
    plan = plan_from_orders(heads, layout, BLOCK, "cpu")
    for h, head in enumerate(heads):
        perm = layout.permutation(head.order)
        assert torch.equal(plan.permutation[h], perm)
        qp, kp, vp = (x[:, :, perm] for x in (q, k, v))
        out = ds.block_sparse_attention(qp, kp, vp, plan.mask, backend="reference")[
            :, :, layout.inverse_permutation(head.order)
        ]
        token_mask = plan.mask.token_mask()[0, h]  # over the permuted sequence
        native = torch.zeros_like(token_mask)
        native[perm[:, None], perm[None, :]] = token_mask
        scores = (q[0, h] @ k[0, h].T / 4.0).masked_fill(~native, float("-inf"))
        expected = torch.softmax(scores, dim=-1) @ v[0, h]
        torch.testing.assert_close(out[0, h], expected, atol=1e-5, rtol=1e-5)
    assert plan.mask.name.startswith("paro(")


def test_bad_inputs():
    layout = ds.VideoLayout(2, 4, 4)
    stats = OrderStatistics(layout, BLOCK)
    with pytest.raises(ValueError, match="no statistics"):
        choose_orders(stats)
    with pytest.raises(ValueError, match="q and k must have 32 tokens"):
        stats.update(torch.randn(1, 1, 30, 8), torch.randn(1, 1, 30, 8))
    stats.update(torch.randn(1, 1, 32, 8), torch.randn(1, 1, 32, 8))
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\]"):
        choose_orders(stats, density=1.5)
