from __future__ import annotations

import pytest
import torch

from dit_sparse import ORDERS, VideoLayout

LAYOUTS = [
    VideoLayout(3, 4, 5),
    VideoLayout(2, 3, 4, text_len=7, text_position="prefix"),
    VideoLayout(4, 2, 3, text_len=5, text_position="suffix"),
]


def test_counts_and_slices():
    layout = VideoLayout(frames=3, height=2, width=4, text_len=5, text_position="prefix")
    assert (layout.num_tokens, layout.video_tokens, layout.frame_tokens) == (29, 24, 8)
    assert layout.video_slice == slice(5, 29) and layout.text_slice == slice(0, 5)
    suffix = VideoLayout(3, 2, 4, text_len=5, text_position="suffix")
    assert suffix.video_slice == slice(0, 24) and suffix.text_slice == slice(24, 29)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda x: x.text_position)
@pytest.mark.parametrize("order", ORDERS)
def test_permutation_is_a_bijection_with_exact_inverse(layout, order):
    perm = layout.permutation(order)
    inv = layout.inverse_permutation(order)
    assert sorted(perm.tolist()) == list(range(layout.num_tokens))
    x = torch.randn(2, layout.num_tokens, 3)
    assert torch.equal(x[:, perm][:, inv], x)
    assert torch.equal(x[:, inv][:, perm], x)
    # text tokens stay where they are
    text = torch.arange(layout.num_tokens)[layout.text_slice]
    assert torch.equal(perm[layout.text_slice], text)


@pytest.mark.parametrize("order", ORDERS)
def test_permutation_follows_the_token_level_definition(order):
    layout = VideoLayout(2, 3, 4, text_len=3, text_position="prefix")
    coords = layout.video_coordinates()  # (video_tokens, 3) in native (F, H, W) order
    perm = layout.permutation(order)[layout.video_slice] - layout.video_start
    reordered = coords[perm]  # coordinates in the new order
    # In the new order the sequence must be sorted lexicographically by the axes, outermost first.
    axes = ["FHW".index(a) for a in order]
    keys = [tuple(int(reordered[i, a]) for a in axes) for i in range(len(reordered))]
    assert keys == sorted(keys)


def test_identity_and_frames_innermost():
    layout = VideoLayout(3, 2, 2)
    assert torch.equal(layout.permutation("FHW"), torch.arange(12))
    # "HWF": the same pixel in consecutive frames is contiguous
    assert layout.permutation("HWF")[:3].tolist() == [0, 4, 8]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(frames=0, height=2, width=2), "frames must be a positive int"),
        (dict(frames=2, height=2.0, width=2), "height must be a positive int"),
        (dict(frames=2, height=2, width=2, text_len=-1, text_position="prefix"), "text_len"),
        (dict(frames=2, height=2, width=2, text_len=3), "text_position='none'"),
        (dict(frames=2, height=2, width=2, text_position="middle"), "text_position must be one of"),
    ],
)
def test_bad_layouts_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VideoLayout(**kwargs)


def test_unknown_order_is_rejected():
    with pytest.raises(ValueError, match="order must be one of"):
        VideoLayout(2, 2, 2).permutation("FHF")
