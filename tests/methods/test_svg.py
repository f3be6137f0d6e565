from __future__ import annotations

import math

import pytest
import torch

import dit_sparse as ds
from dit_sparse.integration.specs import SPECS
from dit_sparse.layout import invert_permutation
from dit_sparse.methods import AttentionCall, build_method
from dit_sparse.methods.svg import SVGMethod, svg_band_width

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
    # the default sink: every row keeps the first frame (spatial head) or the first 16 positions of "HWF"
    for head, order in enumerate(("FHW", "HWF")):
        kept = in_model_order(plan.mask.token_mask()[0, head], plan.permutation[head])
        assert kept[:, first_keys_in_model_order(LAYOUT, order)].all()
    # per head (6 x 6 blocks): the band keeps the tridiagonal's 16 blocks and the default sink adds kv block 0
    # to the 4 rows the band misses
    assert plan.mask.density() == pytest.approx(20 / 36)


def test_bands_covering_everything_reproduce_dense_attention_through_the_reordering():
    config = ds.SparseAttentionConfig("svg", block_size=16, spatial_width=10_000, temporal_width=10_000)
    method = build_method(config, WAN)
    q, k, v = (torch.randn(1, 2, LAYOUT.num_tokens, 32) for _ in range(3))
    out, _ = run_plan(method, q, k, v)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)
    assert method.searches == 1


# -- the reference's settings (Sparse-VideoGen 5ce7b01) ----------------------------------------------------------

ODD_LAYOUTS = [
    ds.VideoLayout(5, 3, 7),  # 105 tokens, not a multiple of the block
    ds.VideoLayout(5, 3, 7, text_len=9, text_position="prefix"),
    ds.VideoLayout(5, 3, 7, text_len=11, text_position="suffix"),
]


def test_defaults_are_the_reference_wan_settings():
    params = ds.SparseAttentionConfig("svg").method_params()
    assert params["sparsity"] == 0.3 and params["sink"] is True and params["num_samples"] == 64
    assert params["spatial_width"] is None and params["temporal_width"] is None


@pytest.mark.parametrize(
    "layout",
    [
        ds.VideoLayout(21, 30, 52),  # Wan 2.1 480p
        ds.VideoLayout(21, 45, 80),  # Wan 2.1 720p
        ds.VideoLayout(33, 45, 80, text_len=256, text_position="suffix"),  # HunyuanVideo 720p
        *ODD_LAYOUTS,
    ],
)
@pytest.mark.parametrize("sparsity", [0.1, 0.25, 0.3, 0.9])
def test_band_width_is_the_reference_formula(layout, sparsity):
    n, text = layout.num_tokens, layout.text_len
    kept_for_video = sparsity - 2 * text / n  # the text rows and columns are paid for first
    expected = math.ceil(n * (1 - math.sqrt(1 - kept_for_video))) if kept_for_video > 0 else 0
    assert svg_band_width(layout, sparsity) == expected
    params = ds.SparseAttentionConfig("svg", sparsity=sparsity).method_params()
    assert SVGMethod.widths(layout, params) == (expected, expected)


def test_band_width_extremes_and_explicit_widths():
    layout = ds.VideoLayout(21, 30, 52)
    assert svg_band_width(layout, 1.0) == layout.num_tokens  # every pair
    assert svg_band_width(ds.VideoLayout(2, 2, 2, text_len=8, text_position="prefix"), 0.5) == 0  # text is all
    # a band of half-width w keeps about 1 - (1 - w / n)^2 of the map, so the width gives back the fraction
    w = svg_band_width(layout, 0.3)
    assert 1 - (1 - w / layout.num_tokens) ** 2 == pytest.approx(0.3, abs=1e-4)
    params = ds.SparseAttentionConfig("svg", spatial_width=7).method_params()
    assert SVGMethod.widths(layout, params) == (7, w)
    params = ds.SparseAttentionConfig("svg", temporal_width=9, sparsity=0.5).method_params()
    assert SVGMethod.widths(layout, params) == (svg_band_width(layout, 0.5), 9)


def svg_token_mask(layout: ds.VideoLayout, order: str, width: int, sink: bool) -> torch.Tensor:
    """Token-level definition, in the reordered sequence: text rows and columns kept; video query and key at
    positions p, r of the video in ``order`` kept iff ``|p - r| <= width`` or, with the sink, ``r < H' * W'``."""
    n = layout.num_tokens
    is_video = torch.zeros(n, dtype=torch.bool)
    is_video[layout.video_slice] = True  # the reorderings keep text in place
    position = torch.cumsum(is_video.long(), 0) - 1  # position among the video tokens of the reordered sequence
    near = (position[:, None] - position[None, :]).abs() <= width
    first = (position < layout.frame_tokens)[None, :].expand(n, n) if sink else torch.zeros(n, n, dtype=torch.bool)
    video = is_video[:, None] & is_video[None, :]
    return ~video | near | (video & first)


def block_reduction(token_mask: torch.Tensor, block: int) -> torch.Tensor:
    """(nQ, nK): a block kept iff any token pair in it is kept."""
    n = token_mask.shape[0]
    nb = -(-n // block)
    padded = torch.zeros(nb * block, nb * block, dtype=torch.bool)
    padded[:n, :n] = token_mask
    return padded.view(nb, block, nb, block).any(dim=3).any(dim=1)


@pytest.mark.parametrize("layout", ODD_LAYOUTS)
@pytest.mark.parametrize("sink", [True, False])
@pytest.mark.parametrize("block", [16, 32])
def test_candidate_masks_are_the_exact_block_reduction_of_band_and_sink(layout, sink, block):
    config = ds.SparseAttentionConfig("svg", block_size=block, sink=sink, sparsity=0.2)
    method = build_method(config, WAN)
    q = torch.zeros(1, 1, layout.num_tokens, 8)
    call = AttentionCall(0, 0, None, layout, q, q, q)
    width = svg_band_width(layout, 0.2)
    assert width > 0
    for (mask, perm), order in zip(method._candidate_masks(call, config.method_params()), ("FHW", "HWF"), strict=True):
        assert torch.equal(perm, layout.permutation(order))
        assert torch.equal(mask.blocks[0, 0], block_reduction(svg_token_mask(layout, order, width, sink), block))


def first_keys_in_model_order(layout: ds.VideoLayout, order: str) -> torch.Tensor:
    """Model-order token ids of the H' * W' video keys that come first in ``order``: frame 0 for ``"FHW"``,
    the (h, w, f) with ``(h * W' + w) * F' + f < H' * W'`` for ``"HWF"`` (frames innermost)."""
    f, h, w = layout.video_coordinates().unbind(-1)
    rank = {"FHW": (f * layout.height + h) * layout.width + w, "HWF": (h * layout.width + w) * layout.frames + f}
    return torch.nonzero(rank[order] < layout.frame_tokens).squeeze(1) + layout.video_start


def in_model_order(reordered_tokens: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """(N, N) token mask of the reordered sequence -> the same mask indexed by model-order tokens."""
    position = invert_permutation(perm)  # where each model token sits in the reordered sequence
    return reordered_tokens[position][:, position]


@pytest.mark.parametrize("layout", ODD_LAYOUTS)
@pytest.mark.parametrize("sink", [True, False])
def test_sink_keeps_the_first_frame_of_each_heads_order_for_every_row(layout, sink):
    config = ds.SparseAttentionConfig("svg", block_size=16, sink=sink, spatial_width=1, temporal_width=1)
    method = build_method(config, WAN)
    q = torch.zeros(1, 1, layout.num_tokens, 8)
    candidates = method._candidate_masks(AttentionCall(0, 0, None, layout, q, q, q), config.method_params())
    for (mask, perm), order in zip(candidates, ("FHW", "HWF"), strict=True):
        kept = in_model_order(mask.token_mask()[0, 0], perm)  # (N, N) in the model's order
        first = first_keys_in_model_order(layout, order)
        assert first.numel() == layout.frame_tokens
        # with the sink every row keeps them; without it the narrow band misses them in far rows
        assert bool(kept[:, first].all()) == sink


def test_block_density_at_wan_480p_is_the_reference_sparsity():
    """21 x 30 x 52 latent cells (Wan 2.1 at 832 x 480, 81 frames), block 128, sparsity 0.3: the band keeps
    0.30 of the blocks, the first-frame sink adds about 0.04 (the reference's mask has the same sink)."""
    layout = ds.VideoLayout(21, 30, 52)
    method = build_method(ds.SparseAttentionConfig("svg"), WAN)
    q = torch.zeros(1, 1, layout.num_tokens, 8)
    params = method.config.method_params()
    for mask, _ in method._candidate_masks(AttentionCall(0, 0, None, layout, q, q, q), params):
        assert mask.density() == pytest.approx(0.3456, abs=5e-4)
    no_sink = build_method(ds.SparseAttentionConfig("svg", sink=False), WAN)
    for mask, _ in no_sink._candidate_masks(AttentionCall(0, 0, None, layout, q, q, q), no_sink.config.method_params()):
        assert mask.density() == pytest.approx(0.3045, abs=5e-4)


def test_sampled_rows_are_distinct_video_rows():
    for layout in ODD_LAYOUTS:
        rows = SVGMethod.sampled_rows(layout, 64, seed=3)
        assert rows.numel() == 64 and rows.unique().numel() == 64
        assert ((rows >= layout.video_start) & (rows < layout.video_start + layout.video_tokens)).all()
        assert torch.equal(rows, SVGMethod.sampled_rows(layout, 64, seed=3))  # reproducible
        every = SVGMethod.sampled_rows(layout, 1000, seed=0)
        assert torch.equal(every.sort().values, torch.arange(layout.num_tokens)[layout.video_slice])
