"""Every family beyond the first four, through its real tiny pipeline with CFG: the model-support contract.

For each: the ``dense`` config is bit-identical to the vanilla pipeline; a keep-everything mask equals it within
1e-5; radial, sparse_vdit, adaspa and draft run sparse (mean density < 0.9) on a token grid whose size is not a
multiple of the 16-token blocks; removing dit-sparse restores bit-identical output.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, MOCHI_CALL, call_kwargs, tiny_mochi_pipeline

import dit_sparse as ds
from dit_sparse.integration.apply import sparse_state
from dit_sparse.integration.specs import spec_for

# Pixel frames that give 5 latent frames (the VAE's temporal factor differs): 5 x 9 x 7 = 315 video tokens.
FIVE_LATENT_FRAMES = {"skyreels_v2": 17, "wan_vace": 17, "mochi": 25}
# "cover" keeps a block iff the definition keeps a pair in it: with every frame pair dense, every block.
KEEP_ALL = ds.SparseAttentionConfig(
    "radial", block_size=16, backend="reference", dense_distance=1000, block_rule="cover"
)
SPARSE = {
    "radial": ds.SparseAttentionConfig("radial", block_size=16, backend="reference"),
    "sparse_vdit": ds.SparseAttentionConfig("sparse_vdit", block_size=16, backend="reference"),
    "adaspa": ds.SparseAttentionConfig("adaspa", block_size=16, backend="reference", search_steps=(1,), density=0.2),
    "draft": ds.SparseAttentionConfig("draft", block_size=16, backend="reference", window=(2, 8), fraction=0.2),
}


def generate(pipe, family: str, **overrides) -> torch.Tensor:
    call = FAMILIES[family][2]
    kwargs = call_kwargs(
        call, output_type="latent", return_dict=False, num_frames=FIVE_LATENT_FRAMES[family], num_inference_steps=3
    )
    return pipe(**kwargs | overrides)[0]


@pytest.mark.parametrize("family", list(FIVE_LATENT_FRAMES))
def test_exact_when_dense_sparse_otherwise_and_removable(family):
    pipe = FAMILIES[family][1]()
    vanilla = generate(pipe, family)
    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("dense"))
    assert torch.equal(generate(pipe, family), vanilla)
    ds.apply_sparse_attention(pipe, KEEP_ALL)
    torch.testing.assert_close(generate(pipe, family), vanilla, atol=1e-5, rtol=1e-5)
    assert ds.summary(pipe)["mean_density"] == 1.0
    layers = len(spec_for(pipe.transformer).self_attention(pipe.transformer))
    for method, config in SPARSE.items():
        ds.apply_sparse_attention(pipe, config)
        out = generate(pipe, family)
        stats = ds.summary(pipe)
        assert torch.isfinite(out).all() and not torch.equal(out, vanilla), method
        assert stats["mean_density"] < 0.9, (method, stats["mean_density"])
        assert stats["steps"] == 3 and len(stats["per_layer"]) == layers, method
    ds.remove_sparse_attention(pipe)
    assert torch.equal(generate(pipe, family), vanilla)


def test_mochi_attends_sample_by_sample_over_each_prompts_own_text():
    """Mochi's processor drops each prompt's padding and calls attention once per sample: calls of one layer
    have 315 video tokens + 2, 2, 4 and 7 text tokens (negatives first), and a dynamic method searches each
    sample on its own (a mask found for one prompt is not reused for another)."""
    pipe = tiny_mochi_pipeline()
    prompts, negative = ["a red circle", "a small blue square spinning slowly"], "blurry"  # 4, 7 and 2 tokens

    def run():
        kwargs = call_kwargs(MOCHI_CALL, prompts, negative_prompt=negative, output_type="latent", return_dict=False)
        return pipe(**kwargs | {"num_frames": 25, "num_inference_steps": 3})[0]

    vanilla = run()
    config = ds.SparseAttentionConfig("adaspa", block_size=16, backend="reference", search_steps=(1,), density=0.2)
    ds.apply_sparse_attention(pipe, config)
    seen = []
    sparse_state(pipe.transformer).observers.append(
        lambda state, layer, q, k, v: seen.append((layer, q.shape[0], q.shape[2], state.layout))
    )
    out = run()
    assert [(layer, b, n) for layer, b, n, _ in seen[:8]] == [
        (layer, 1, 315 + text) for layer in (0, 1) for text in (2, 2, 4, 7)
    ]
    assert all(layout.num_tokens == n and layout.text_position == "suffix" for _, _, n, layout in seen)
    assert sparse_state(pipe.transformer).method.searches == 2 * 4  # layers x samples, at the one search step
    assert torch.isfinite(out).all() and not torch.equal(out, vanilla)
    assert ds.summary(pipe)["mean_density"] < 0.9
    ds.remove_sparse_attention(pipe)
    assert torch.equal(run(), vanilla)
