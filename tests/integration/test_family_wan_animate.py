"""Wan 2.2 Animate (``WanAnimatePipeline``): the family contract, the sequence its self-attention sees (the reference
image frame, then the window's video frames), replace mode, generation in several windows, and the drop-in class.

The pipeline runs CFG as two batch-2 forwards per step (cond, then uncond with the face video blanked), each in a
diffusers cache context and without a step index, so dit-sparse counts steps from the falling timesteps.
"""

from __future__ import annotations

import torch
from family_contract import assert_family_contract
from tiny_wan_animate import TOKEN_GRID, call_kwargs, frames, tiny_wan_animate_pipeline, token_grid

import dit_sparse as ds
from dit_sparse.integration.apply import sparse_state
from dit_sparse.integration.hooks import ATTENTION_HOOK, CROSS_HOOK
from dit_sparse.pipelines import SparseWanAnimatePipeline

FRAMES = 17  # one window: 5 latent frames + the reference frame = 6 x 9 x 7 = 378 tokens
LAYERS = 2  # self-attention layers of the tiny transformer (blocks[i].attn1)
RADIAL = ds.SparseAttentionConfig("radial", block_size=16, backend="reference")


def latents(pipe, **overrides) -> torch.Tensor:
    """The last window's latents, the reference frame included: (2, 4, 1 + latent frames, 18, 14)."""
    return pipe(**call_kwargs(output_type="latent", return_dict=False, **overrides))[0]


def observe(pipe) -> list[tuple[int, int, int, tuple[int, int, int], int]]:
    """Per self-attention call: (layer, batch, tokens q holds, the layout's grid, the step dit-sparse counts)."""
    seen = []
    sparse_state(pipe.transformer).observers.append(
        lambda state, layer, q, k, v: seen.append(
            (layer, q.shape[0], q.shape[2], (state.layout.frames, state.layout.height, state.layout.width), state.step)
        )
    )
    return seen


def hooks(module) -> dict:
    """The diffusers hooks registered on ``module`` by name."""
    registry = getattr(module, "_diffusers_hook", None)
    return {} if registry is None else registry.hooks


def test_exact_when_dense_sparse_otherwise_and_removable():
    assert_family_contract(
        tiny_wan_animate_pipeline(),
        lambda: call_kwargs(output_type="latent", return_dict=False, num_frames=FRAMES, num_inference_steps=3),
    )


def test_self_attention_sees_the_reference_frame_then_the_video_and_face_adapters_stay_dense():
    """Only ``blocks[i].attn1`` goes through dit-sparse's self-attention, over (1 + 3 latent frames) x 9 x 7 tokens;
    the face adapters (per-frame cross-attention to the face motion tokens) keep their processors, which call
    diffusers' default attention; ``attn2`` (text) only has its repeated padding keys merged, and gets its own
    processor back on removal."""
    pipe = tiny_wan_animate_pipeline()
    transformer = pipe.transformer
    face = [adapter.processor for adapter in transformer.face_adapter]
    cross = [block.attn2.processor for block in transformer.blocks]
    self_attention = [block.attn1.processor for block in transformer.blocks]
    ds.apply_sparse_attention(pipe, RADIAL)
    seen = observe(pipe)
    out = latents(pipe)
    assert out.shape[2] == TOKEN_GRID[0] and torch.isfinite(out).all()
    # 2 steps x (cond, uncond) x 2 layers, each over the whole batch and the whole sequence
    assert [(layer, batch, n, grid) for layer, batch, n, grid, _ in seen] == [
        (layer, 2, TOKEN_GRID[0] * TOKEN_GRID[1] * TOKEN_GRID[2], TOKEN_GRID) for layer in (0, 1)
    ] * 4
    assert [step for *_, step in seen] == [0] * 4 + [1] * 4
    assert ds.summary(pipe)["attention_calls"] == len(seen)
    # dit-sparse saw the attn1 calls only; the face adapters and attn2 ran their own processor objects
    assert all(a.processor is p for a, p in zip(transformer.face_adapter, face, strict=True))
    assert all(processor._attention_backend is None for processor in face)
    hooked = [name for name, module in transformer.named_modules() if ATTENTION_HOOK in hooks(module)]
    assert hooked == ["blocks.0.attn1", "blocks.1.attn1"]
    merged = [name for name, module in transformer.named_modules() if CROSS_HOOK in hooks(module)]
    assert merged == ["blocks.0.attn2", "blocks.1.attn2"]
    assert ds.summary(pipe)["cross_attention_calls"] > 0
    ds.remove_sparse_attention(pipe)
    assert all(b.attn1.processor is p for b, p in zip(transformer.blocks, self_attention, strict=True))
    assert all(b.attn2.processor is p for b, p in zip(transformer.blocks, cross, strict=True))
    assert not any(CROSS_HOOK in hooks(module) for module in transformer.modules())


def test_replace_mode_has_the_same_sequence():
    """``mode="replace"`` puts the background video and the character mask in the conditioning channels: other
    inputs, the same tokens."""
    pipe = tiny_wan_animate_pipeline()
    ds.apply_sparse_attention(pipe, RADIAL)
    seen = observe(pipe)
    background, mask = frames(FRAMES, seed=4), frames(FRAMES, seed=5)
    out = latents(pipe, num_frames=FRAMES, mode="replace", background_video=background, mask_video=mask)
    grid = token_grid(FRAMES)
    assert {(batch, n, layout) for _, batch, n, layout, _ in seen} == {(2, grid[0] * grid[1] * grid[2], grid)}
    stats = ds.summary(pipe)
    assert torch.isfinite(out).all() and stats["steps"] == 2 and stats["mean_density"] < 0.9


def test_each_window_is_a_new_generation():
    """17 frames in windows of 9 (1 frame carried over) are 2 windows of 3 + 1 latent frames, each denoised from
    noise with the full schedule: the step counter restarts with each window (so ``dense_steps`` counts per window),
    and after the call ``summary()`` holds the last window only (3 steps, 3 x 2 x 2 attention calls, not 6 steps)."""
    pipe = tiny_wan_animate_pipeline()
    two_windows = {"num_frames": FRAMES, "segment_frame_length": 9, "num_inference_steps": 3}
    vanilla = latents(pipe, **two_windows)
    config = ds.SparseAttentionConfig("radial", block_size=16, backend="reference", dense_steps=3)
    ds.apply_sparse_attention(pipe, config)
    seen = observe(pipe)
    # every step of both windows ran dense (counted on, window 2's steps 3..5 would run radial, sparse on this grid)
    assert torch.equal(latents(pipe, **two_windows), vanilla)
    assert {grid for *_, grid, _ in seen} == {token_grid(9)}
    assert [step for *_, step in seen[:: 2 * LAYERS]] == [0, 1, 2, 0, 1, 2]
    stats = ds.summary(pipe)
    assert stats["steps"] == 3 and stats["attention_calls"] == 3 * 2 * LAYERS == len(seen) // 2


def test_drop_in_pipeline_from_a_local_folder(tmp_path):
    pipe = tiny_wan_animate_pipeline()
    vanilla = latents(pipe)
    pipe.save_pretrained(tmp_path)
    sparse_pipe = SparseWanAnimatePipeline.from_pretrained(tmp_path, sparse_attention=RADIAL)
    sparse_pipe.set_progress_bar_config(disable=True)
    assert isinstance(sparse_pipe, type(pipe))
    sparse = latents(sparse_pipe)
    assert sparse.shape == vanilla.shape and torch.isfinite(sparse).all() and not torch.equal(sparse, vanilla)
    stats = ds.summary(sparse_pipe)
    assert stats["steps"] == 2 and stats["mean_density"] < 1
    ds.remove_sparse_attention(sparse_pipe)
    assert torch.equal(latents(sparse_pipe), vanilla)
