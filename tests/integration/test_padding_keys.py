"""Cross-attention's repeated padding keys merged into one key (``merge_padding_keys``): exact up to rounding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tiny_models import FAMILIES, call_kwargs

import dit_sparse as ds
from dit_sparse.integration.cross import can_merge, merged_cross_attention, repeated_tail_start
from dit_sparse.integration.hooks import CROSS_HOOK


def padded_keys(batch: int, lengths: list[int], total: int, heads: int = 2, dim: int = 8, seed: int = 0):
    """(B, L, H, D) keys and values: each sample's first ``lengths[b]`` rows random, the rest one repeated row."""
    generator = torch.Generator().manual_seed(seed)
    k = torch.randn(batch, total, heads, dim, generator=generator)
    v = torch.randn(batch, total, heads, dim, generator=generator)
    pad_k, pad_v = torch.randn(heads, dim, generator=generator), torch.randn(heads, dim, generator=generator)
    for b, length in enumerate(lengths):
        k[b, length:], v[b, length:] = pad_k, pad_v
    return k, v


def dense(query, key, value, scale=None):
    """SDPA over every key, in diffusers' (B, N, H, D) layout."""
    return F.scaled_dot_product_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), scale=scale
    ).transpose(1, 2)


@pytest.mark.parametrize("lengths", [[5], [3, 9], [0, 7]])
def test_merged_attention_equals_attention_over_every_key(lengths):
    k, v = padded_keys(len(lengths), lengths, total=64)
    q = torch.randn(len(lengths), 40, 2, 8)
    start = repeated_tail_start(k, v)
    assert start == max(lengths)  # the run every sample has
    out = merged_cross_attention(q, k, v, start, scale=0.3)
    assert out.shape == q.shape and out.dtype == q.dtype
    torch.testing.assert_close(out, dense(q, k, v, scale=0.3), atol=1e-6, rtol=1e-5)


def test_merged_attention_in_bf16_is_computed_in_fp32_and_cast_back():
    k, v = padded_keys(1, [6], total=512)
    q = torch.randn(1, 32, 2, 8)
    reference = dense(q, k, v)  # fp32 over all 512 keys
    out = merged_cross_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), repeated_tail_start(k, v), None)
    assert out.dtype == torch.bfloat16
    # inputs rounded to bf16, the merge itself in fp32: as close as bf16 SDPA over all the keys gets
    bf16_dense = dense(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float())
    torch.testing.assert_close(out.float(), bf16_dense, atol=1e-2, rtol=1e-2)
    assert (out.float() - reference).abs().max() < 3e-2


def test_the_run_needs_equal_keys_and_values_and_half_the_keys():
    k, v = padded_keys(1, [5], total=32)
    assert repeated_tail_start(k, v) == 5
    v2 = v.clone()
    v2[0, 9] += 1.0  # a value that differs breaks the run after it
    assert repeated_tail_start(k, v2) == 10
    v2[0, 20] += 1.0  # 11 of 32 left: not worth merging
    assert repeated_tail_start(k, v2) is None
    assert repeated_tail_start(*padded_keys(1, [9], total=16)) is None  # 7 of 16: not worth merging
    k3, v3 = padded_keys(1, [16], total=16)
    assert repeated_tail_start(k3, v3) is None  # no repeated row at all
    merged = merged_cross_attention(torch.randn(1, 4, 2, 8), k, v, 5, None)
    assert torch.isfinite(merged).all()


def test_only_unmasked_inference_calls_in_fp32_or_on_a_cpu_merge():
    q = torch.randn(1, 4, 2, 8)
    assert can_merge(q, None, 0.0, False)
    assert can_merge(q.bfloat16(), None, 0.0, False)  # a CPU merges half precision in fp32
    assert not can_merge(q, torch.ones(1, 1, 4, 16, dtype=torch.bool), 0.0, False)
    assert not can_merge(q, None, 0.1, False)
    assert not can_merge(q, None, 0.0, True)


def wan_latents(pipe) -> torch.Tensor:
    _, _, call = FAMILIES["wan"]
    return pipe(**call_kwargs(call, output_type="latent", return_dict=False))[0]


def test_wan_cross_attention_merges_its_zero_padded_prompt_and_is_removable():
    _, make_pipeline, _ = FAMILIES["wan"]
    pipe = make_pipeline()
    vanilla = wan_latents(pipe)
    originals = [block.attn2.processor for block in pipe.transformer.blocks]

    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("dense"))
    out = wan_latents(pipe)
    stats = ds.summary(pipe)
    torch.testing.assert_close(out, vanilla, atol=1e-5, rtol=1e-5)
    # every text cross-attention call merged: the tiny prompts are a few tokens padded to the call's length
    assert stats["cross_attention_calls"] == stats["attention_calls"] > 0
    assert stats["merged_cross_calls"] == stats["cross_attention_calls"]
    assert stats["merged_keys_per_call"] >= 1
    hooked = [name for name, module in pipe.transformer.named_modules() if CROSS_HOOK in _hooks(module)]
    assert hooked == [f"blocks.{i}.attn2" for i in range(len(pipe.transformer.blocks))]

    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("dense", merge_padding_keys=False))
    assert torch.equal(wan_latents(pipe), vanilla)
    assert ds.summary(pipe)["cross_attention_calls"] == 0
    assert all(b.attn2.processor is p for b, p in zip(pipe.transformer.blocks, originals, strict=True))

    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("dense"))
    ds.remove_sparse_attention(pipe)
    assert all(b.attn2.processor is p for b, p in zip(pipe.transformer.blocks, originals, strict=True))
    assert not any(CROSS_HOOK in _hooks(module) for module in pipe.transformer.modules())
    assert torch.equal(wan_latents(pipe), vanilla)


def test_a_prompt_as_long_as_the_padding_runs_dense():
    """A prompt that fills most of the padded length leaves a short run: the call runs dense, counted as seen."""
    _, make_pipeline, call = FAMILIES["wan"]
    pipe = make_pipeline()
    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("dense"))
    long_prompt = " ".join(["red"] * 40)
    pipe(**call_kwargs(call, output_type="latent", return_dict=False, prompt=long_prompt, max_sequence_length=48))
    stats = ds.summary(pipe)
    assert stats["cross_attention_calls"] > 0
    assert stats["merged_cross_calls"] < stats["cross_attention_calls"]


def test_config_round_trip_and_check():
    config = ds.SparseAttentionConfig("sparsed", fraction=0.2, merge_padding_keys=False)
    assert ds.SparseAttentionConfig.from_dict(config.to_dict()) == config
    assert ds.SparseAttentionConfig("sparsed", fraction=0.2).merge_padding_keys is True
    with pytest.raises(ValueError, match="merge_padding_keys"):
        ds.SparseAttentionConfig("sparsed", fraction=0.2, merge_padding_keys="yes")


def test_log_count_is_the_weight_of_the_merged_run():
    """With q orthogonal to every key all scores are 0: the output is the mean of the values over all keys,
    which the merged call only gives if the one pad key weighs as many as the run it stands for."""
    k, v = padded_keys(1, [3], total=20, heads=1, dim=4)
    q = torch.zeros(1, 1, 1, 4)
    out = merged_cross_attention(q, k, v, repeated_tail_start(k, v), None)
    expected = v.mean(dim=1, keepdim=True)
    torch.testing.assert_close(out, expected)
    assert math.isclose(float(out[0, 0, 0, 0]), float(expected[0, 0, 0, 0]), rel_tol=1e-6)


def _hooks(module) -> dict:
    registry = getattr(module, "_diffusers_hook", None)
    return {} if registry is None else registry.hooks
