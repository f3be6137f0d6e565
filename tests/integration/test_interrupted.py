"""An exception or KeyboardInterrupt in the middle of a generation leaves the pipeline as good as fresh."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, call_kwargs

import dit_sparse as ds

STEPS = 4


class Stop(Exception):
    pass


def generate(pipe, call, *, stop_at: int | None = None, error: type[BaseException] = Stop):
    def callback(pipe, step, timestep, kwargs):
        if step == stop_at:
            raise error(f"stopped at step {step}")
        return kwargs

    kwargs = call_kwargs(call, output_type="latent", num_inference_steps=STEPS, num_frames=25)
    return pipe(**kwargs, callback_on_step_end=callback)[0]


@pytest.mark.parametrize(("family", "error"), [("wan", KeyboardInterrupt), ("cogvideox", Stop)])
def test_interrupted_generation_leaves_no_trace(family, error):
    _, make_pipeline, call = FAMILIES[family]
    config = ds.SparseAttentionConfig("sparsed", block_size=16, backend="reference", dense_steps=1, tau=0.5)

    fresh = make_pipeline()
    ds.apply_sparse_attention(fresh, config)
    expected_sparse = generate(fresh, call)
    expected_stats = ds.summary(fresh)
    ds.remove_sparse_attention(fresh)
    expected_dense = generate(fresh, call)

    pipe = make_pipeline()
    ds.apply_sparse_attention(pipe, config)
    for stop_at in (2, 0):  # after the search (masks cached), and in the first (dense) step
        with pytest.raises(error, match=f"stopped at step {stop_at}"):
            generate(pipe, call, stop_at=stop_at, error=error)
    # the next run searches again, as a fresh pipeline's: no mask of the interrupted runs is served
    assert torch.equal(generate(pipe, call), expected_sparse)
    stats = ds.summary(pipe)
    assert (stats["searches"], stats["reuses"], stats["steps"]) == (
        expected_stats["searches"],
        expected_stats["reuses"],
        expected_stats["steps"],
    )
    with pytest.raises(error):
        generate(pipe, call, stop_at=1, error=error)
    ds.remove_sparse_attention(pipe)
    assert torch.equal(generate(pipe, call), expected_dense)
