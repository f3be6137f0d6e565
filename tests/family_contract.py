"""The contract every supported family meets through its real tiny pipeline (issue: more models).

With CFG on, on a token grid whose size is not a multiple of the 16-token blocks and has 5 latent frames or
more: the ``dense`` config is bit-identical to the vanilla pipeline without merged padding keys, and within
1e-5 with them (fp32); a keep-everything mask equals it within 1e-5; radial, sparse_vdit, adaspa and draft run
sparse (mean density < 0.9) for every denoising step and every self-attention layer; removing dit-sparse
restores bit-identical output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

import dit_sparse as ds
from dit_sparse.integration.specs import spec_for

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
STEPS = 3


def first_output(result: Any) -> torch.Tensor:
    """The latents of a ``return_dict=False, output_type="latent"`` call."""
    return result[0]


def assert_family_contract(
    pipe,
    kwargs: Callable[[], dict[str, Any]],
    *,
    output: Callable[[Any], torch.Tensor] = first_output,
    steps: int = STEPS,
    max_density: dict[str, float] | None = None,
) -> dict[str, float]:
    """Run the contract on ``pipe``; returns each method's mean density.

    Args:
        pipe: a tiny pipeline of the family, without dit-sparse.
        kwargs: fresh call keyword arguments per call (a newly seeded generator each time), for ``steps``
            denoising steps with latent output.
        output: the tensor to compare, from the pipeline's return value.
        steps: the denoising steps the call runs (the count dit-sparse must report).
        max_density: per method, a bound other than 0.9 (e.g. 1.0 where a method keeps a single frame whole).
    """

    def run() -> torch.Tensor:
        return output(pipe(**kwargs()))

    vanilla = run()
    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("dense", merge_padding_keys=False))
    assert torch.equal(run(), vanilla)
    # repeated padding keys of cross-attention merged into one (Wan's zero-padded prompts): exact up to rounding
    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("dense"))
    torch.testing.assert_close(run(), vanilla, atol=1e-5, rtol=1e-5)
    ds.apply_sparse_attention(pipe, KEEP_ALL)
    torch.testing.assert_close(run(), vanilla, atol=1e-5, rtol=1e-5)
    assert ds.summary(pipe)["mean_density"] == 1.0
    layers = len(spec_for(pipe.transformer).self_attention(pipe.transformer))
    densities = {}
    for method, config in SPARSE.items():
        ds.apply_sparse_attention(pipe, config)
        out = run()
        stats = ds.summary(pipe)
        assert torch.isfinite(out).all() and not torch.equal(out, vanilla), method
        bound = (max_density or {}).get(method, 0.9)
        assert stats["mean_density"] < bound or bound >= 1.0, (method, stats["mean_density"])
        assert stats["steps"] == steps and len(stats["per_layer"]) == layers, (method, stats["steps"])
        assert all(d is not None for d in stats["per_layer"]), method  # every layer ran through dit-sparse
        densities[method] = stats["mean_density"]
    ds.remove_sparse_attention(pipe)
    assert torch.equal(run(), vanilla)
    return densities
