"""The pyramid method's level allocation: budgets met, heavier blocks finer, PSA's quotas as published."""

from __future__ import annotations

import pytest
import torch

from dit_sparse.methods.pyramid import PSA_RATIOS, allocate_levels, allocate_levels_by_mass, ratios_for_density


def _compute(levels):
    return float(torch.where(levels < 0, 0.0, torch.exp2(-levels.clamp(min=0).float())).mean())


@pytest.mark.parametrize("density", [0.05, 0.1, 0.25, 0.5])
def test_mass_allocation_meets_the_budget_and_pools_lighter_blocks_more(density):
    g = torch.Generator().manual_seed(0)
    mass = torch.rand(1, 4, 16, 36, generator=g) ** 4
    mass = mass / mass.sum(-1, keepdim=True)
    levels = allocate_levels_by_mass(mass, density, max_level=6)
    assert abs(_compute(levels) - density) < 0.01
    assert (levels == 0).any(-1).all()  # each row's heaviest block is full
    # within a row, a heavier block is never read coarser than a lighter one (dropped = coarsest)
    order = torch.argsort(mass, dim=-1, descending=True)
    ranked = torch.gather(torch.where(levels < 0, 99, levels.int()), -1, order)
    assert (ranked[..., 1:] >= ranked[..., :-1]).all()


def test_psa_quotas_by_rank():
    scores = torch.arange(20.0).flip(0).view(1, 1, 1, 20)  # block 0 heaviest
    levels = allocate_levels(scores, PSA_RATIOS)[0, 0, 0].tolist()
    # top 10% full, next 5% by 2, none by 4, next 20% by 8, 65% skipped (boundaries rounded: 2, 3, 3, 7)
    assert levels == [0, 0, 1, 3, 3, 3, 3] + [-1] * 13
    assert ratios_for_density(0.15) == pytest.approx(PSA_RATIOS)


@pytest.mark.parametrize("density", [0.05, 0.3, 0.7, 1.0])
def test_scaled_quotas_cost_the_budget(density):
    ratios = ratios_for_density(density)
    assert sum(r / (1 << level) for level, r in enumerate(ratios)) == pytest.approx(density)
    assert sum(ratios) <= 1 + 1e-9


def test_kv_blocks_apart_from_q_blocks_keep_text_full_at_both_sizes():
    """``kv_block_size``: masses over (q block, kv block) pairs of two sizes, PSA's quotas per q-block row of the
    finer kv blocks, and every block holding text full: its q-block rows at 32 tokens, its kv-block columns at 16."""
    import dit_sparse as ds
    from dit_sparse.integration.specs import SPECS
    from dit_sparse.methods import AttentionCall, build_method
    from dit_sparse.scoring import block_attention_mass

    spec = next(s for s in SPECS if s.name == "cogvideox")
    layout = ds.VideoLayout(3, 6, 8, text_len=20, text_position="prefix")  # 164 tokens, text first
    config = ds.SparseAttentionConfig("pyramid", block_size=32, kv_block_size=16, search_steps=(0,), density=0.25)
    method = build_method(config, spec)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, layout.num_tokens, 16, generator=g) for _ in range(3))
    mask = method.plan_for(AttentionCall(0, 0, "cond", layout, q, k, v)).mask
    assert isinstance(mask, ds.LevelMask) and mask.block_size == (32, 16) and mask.num_blocks == (6, 11)
    levels = mask.levels[0]
    assert (levels[:, 0] == 0).all() and (levels[:, :, :2] == 0).all()  # text: q block 0, kv blocks 0 and 1
    expected = allocate_levels(block_attention_mass(q, k, block_size=(32, 16)), ratios_for_density(0.25))[0]
    video_rows, video_cols = slice(1, None), slice(2, None)
    assert torch.equal(levels[:, video_rows, video_cols], expected[:, video_rows, video_cols])
    with pytest.raises(ValueError, match="kv_block_size must be None"):
        ds.SparseAttentionConfig("pyramid", kv_block_size=48)


def test_row_stride_measures_the_mass_on_every_sth_query_row():
    import dit_sparse as ds
    from dit_sparse.integration.specs import SPECS
    from dit_sparse.methods import AttentionCall, build_method
    from dit_sparse.scoring import block_attention_mass

    spec = next(s for s in SPECS if s.name == "wan")
    layout = ds.VideoLayout(4, 8, 8)  # 256 tokens, no text
    config = ds.SparseAttentionConfig("pyramid", block_size=32, row_stride=4, search_steps=(0, 1), density=0.3)
    method = build_method(config, spec)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, layout.num_tokens, 16, generator=g) for _ in range(3))
    first = method.plan_for(AttentionCall(0, 0, "cond", layout, q, k, v))
    mass, lse = block_attention_mass(q[:, :, ::4], k, block_size=(8, 32), return_lse=True)
    assert first.dense and torch.equal(first.mask.levels, allocate_levels(mass, ratios_for_density(0.3)))
    q2 = torch.randn(1, 2, layout.num_tokens, 16, generator=g)  # a later step: normalized by the cached LSE
    second = method.plan_for(AttentionCall(0, 1, "cond", layout, q2, k, v))
    later = block_attention_mass(q2[:, :, ::4], k, block_size=(8, 32), lse=lse)
    assert not second.dense and torch.equal(second.mask.levels, allocate_levels(later, ratios_for_density(0.3)))
    with pytest.raises(ValueError, match="row_stride must divide the block size"):
        ds.SparseAttentionConfig("pyramid", block_size=32, row_stride=3)
