"""Method caches are bounded by layout: a process switching among many resolutions keeps a bounded set of masks."""

from __future__ import annotations

from dit_sparse.layout import VideoLayout
from dit_sparse.methods.base import LayoutCache


def layout(i: int) -> VideoLayout:
    return VideoLayout(frames=2, height=4, width=4 + i)


def test_the_least_recently_used_layout_goes_first():
    cache = LayoutCache(max_layouts=2)
    cache[(layout(0), "a")] = 0
    cache[(layout(0), "b")] = 1
    cache[(layout(1), "a")] = 2
    assert cache.get((layout(0), "a")) == 0  # layout 0 is now the most recent
    cache[(layout(2), "a")] = 3  # a third layout: layout 1, the least recent, is dropped whole
    assert cache.layouts() == [layout(0), layout(2)]
    assert set(cache) == {(layout(0), "a"), (layout(0), "b"), (layout(2), "a")}
    assert cache.get((layout(1), "a")) is None and cache.get((layout(1), "a"), "miss") == "miss"
    assert cache[(layout(0), "b")] == 1
    cache[(layout(3), "x")] = 4  # layout 2 was used least recently now
    assert cache.layouts() == [layout(0), layout(3)] and len(cache) == 3
    cache.clear()
    assert len(cache) == 0 and cache.layouts() == []


def test_a_static_method_keeps_at_most_its_bound_of_layouts():
    import torch
    from tiny_models import tiny_wan_transformer

    import dit_sparse as ds
    from dit_sparse.integration.specs import spec_for
    from dit_sparse.methods import build_method
    from dit_sparse.methods.base import AttentionCall

    config = ds.SparseAttentionConfig("radial", block_size=16)
    method = build_method(config, spec_for(tiny_wan_transformer()))
    for i in range(12):
        grid = layout(i)
        q = torch.zeros(1, 2, grid.num_tokens, 8)
        method.mask_for(AttentionCall(0, 0, None, grid, q, q, q))
    assert method._cache.layouts() == [layout(i) for i in range(4, 12)]
    assert method.searches == 12
