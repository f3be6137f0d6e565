from __future__ import annotations

import torch

from dit_sparse import VideoLayout
from dit_sparse.bench.patterns import (
    DYNAMIC,
    FAMILIES,
    PAPER_SETTINGS,
    fit_density,
    paper_setting_rows,
    pattern_quality,
    relative_l2,
)
from dit_sparse.integration.capture import CapturedAttention


def test_fit_density_finds_the_closest_width():
    layout = VideoLayout(6, 8, 8)
    mask, width = fit_density("diagonal", layout, 0.3, 16, 2)
    assert abs(mask.density() - 0.3) < 0.05 and mask.num_heads == 2
    # neighbours of the chosen width are no closer to the target
    build = FAMILIES["diagonal"][0]
    for other in (width - 1, width + 1):
        assert abs(build(layout, other, 16, 2).density() - 0.3) >= abs(mask.density() - 0.3)


def test_pattern_quality_rows_and_the_dense_limit():
    layout = VideoLayout(4, 4, 4)
    q, k, v = (torch.randn(1, 2, layout.num_tokens, 16) for _ in range(3))
    # a call from a later step (the embedded source captures step 10): every dynamic method searches there
    call = CapturedAttention(layer=0, step=7, context=None, layout=layout, q=q, k=k, v=v)
    rows = pattern_quality([call], densities=[1.0, 0.3], block_size=16)
    assert {row["family"] for row in rows} == {*FAMILIES, "random", *DYNAMIC}
    for row in rows:
        assert 0 <= row["rel_l2"] < 2 and 0 < row["density"] <= 1
        assert 0 < row["recall"] <= 1 + 1e-6 and row["recall"] >= row["density"] * 0.5
        assert (row["search_overhead"] is None) == (row["family"] not in DYNAMIC)
        if row["density"] == 1.0:
            assert row["rel_l2"] < 1e-5 and row["recall"] > 1 - 1e-5  # a full mask is dense attention
    assert relative_l2(q, q) == 0.0


def test_paper_setting_rows_one_per_method():
    layout = VideoLayout(5, 6, 7)
    q, k, v = (torch.randn(1, 2, layout.num_tokens, 16) for _ in range(3))
    call = CapturedAttention(layer=0, step=7, context=None, layout=layout, q=q, k=k, v=v)
    rows = paper_setting_rows([call], block_size=16)
    assert [row["family"] for row in rows] == [name for name, _, _ in PAPER_SETTINGS]
    by_name = {row["family"]: row for row in rows}
    for row in rows:
        assert 0 < row["density"] <= 1 and 0 <= row["rel_l2"] < 2 and 0 < row["recall"] <= 1 + 1e-6
    # the lossless cover rule keeps every block the paper rule keeps, and more
    assert by_name["radial (cover)"]["density"] >= by_name["radial (paper)"]["density"]


def test_embedded_source_captures_every_layer_of_the_trained_model():
    import argparse

    import pytest

    from dit_sparse import embedded
    from dit_sparse.bench.patterns import add_source_arguments, captured_calls

    parser = argparse.ArgumentParser()
    add_source_arguments(parser)
    calls = captured_calls(parser.parse_args(["--source", "embedded", "--step", "19"]))
    assert sorted((c.layer, c.context) for c in calls) == [(layer, c) for layer in range(4) for c in ("cond", "uncond")]
    config = embedded.load_pipeline().transformer.config
    heads, head_dim = config.num_attention_heads, config.attention_head_dim
    assert all(
        c.step == 19 and c.layout == VideoLayout(9, 16, 16) and c.q.shape == (1, heads, 2304, head_dim) for c in calls
    )
    with pytest.raises(ValueError, match=r"step must be in \[0, 20\)"):
        captured_calls(parser.parse_args(["--source", "embedded", "--step", "20"]))
