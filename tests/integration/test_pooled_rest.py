"""``levels=``: the kv blocks a binary-mask method drops are read pooled (PSA levels / Sol-Attn's summary)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, call_kwargs

import dit_sparse as ds
from dit_sparse.levels import DROPPED, FULL


def test_from_block_mask_reads_the_rest_pooled():
    blocks = torch.eye(4, dtype=torch.bool).expand(1, 2, 4, 4)
    binary = ds.BlockSparseMask.from_dense(blocks, 16, (60, 60))
    levels = ds.LevelMask.from_block_mask(binary, rest=2)
    assert torch.equal(levels.levels, torch.where(blocks, FULL, 2).to(torch.int8)) and levels.max_level == 2
    assert levels.compute_density() == pytest.approx(binary.density() + (1 - binary.density()) / 4, abs=0.02)
    assert torch.equal(ds.LevelMask.from_block_mask(binary).levels, torch.where(blocks, FULL, DROPPED).to(torch.int8))
    with pytest.raises(ValueError, match="rest must be -1"):
        ds.LevelMask.from_block_mask(binary, rest=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"levels": 0}, "levels must be an int >= 1"),
        ({"levels": 5, "block_size": 16}, "pooling by 32 tokens does not divide block_size 16"),
        ({"method": "pyramid", "levels": 1}, "method 'pyramid' takes none"),
        ({"levels": 1, "quant": "int8"}, "levels cannot be combined with quant"),
    ],
)
def test_bad_levels_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ds.SparseAttentionConfig(**{"method": "radial", **kwargs})


def test_a_static_method_with_pooled_rest_runs_through_a_pipeline():
    _, make_pipeline, call = FAMILIES["wan"]
    pipe = make_pipeline()
    kwargs = call_kwargs(call, output_type="latent", num_inference_steps=2, num_frames=25)
    dense = pipe(**kwargs)[0]
    config = dict(method="sliding_tile", block_size=16, tile=(1, 4, 4), window=(1, 1, 1))
    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig(**config))
    binary, binary_density = pipe(**kwargs)[0], ds.summary(pipe)["mean_density"]
    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig(**config, levels=2))
    pooled, pooled_density = pipe(**kwargs)[0], ds.summary(pipe)["mean_density"]
    # the pooled rest costs a quarter of each block the binary mask dropped, and brings the output closer to dense
    assert pooled_density == pytest.approx(binary_density + (1 - binary_density) / 4, rel=0.05)
    assert (pooled - dense).norm() < (binary - dense).norm()
