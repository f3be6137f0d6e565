"""Quantized Q/K attention (``SparseAttentionConfig(quant=...)``) through a tiny offline Wan pipeline."""

from __future__ import annotations

import torch
from tiny_models import WAN_CALL, call_kwargs, tiny_wan_pipeline

import dit_sparse as ds


def generate(pipe) -> torch.Tensor:
    # 17 frames -> 5 latent frames, so radial attention has frame pairs to drop.
    kwargs = call_kwargs(WAN_CALL, num_frames=17, output_type="latent", return_dict=False)
    return pipe(**kwargs)[0]


def relative_l2(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_wan_pipeline_with_int8_and_int4_attention():
    pipe = tiny_wan_pipeline()
    dense = generate(pipe)
    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("radial", block_size=16, backend="reference"))
    radial = generate(pipe)
    # backend "auto" with quant takes the reference twin on a CPU (flex has no quantized attention)
    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("radial", block_size=16, quant="int8"))
    int8 = generate(pipe)
    stats = ds.summary(pipe)
    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("radial", block_size=16, quant="int4"))
    int4 = generate(pipe)
    assert stats["mean_density"] < 1 and torch.isfinite(int8).all() and torch.isfinite(int4).all()
    # Quantization changes the result: int8 by less than sparsity does, int4 by more than int8.
    int8_error = relative_l2(int8, radial)
    assert 0 < int8_error < relative_l2(radial, dense) and int8_error < relative_l2(int4, radial)
