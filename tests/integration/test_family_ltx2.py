"""LTX-2 (LTX2VideoTransformer3DModel, audio + video): only the video self-attention ``attn1`` is sparse.

The contract (family_contract.py) runs on LTX2Pipeline (LTX-2.3 config) and on LTX2ConditionPipeline, which
appends a keyframe's tokens after the video grid, comparing video and audio latents together. Every other
pipeline gets one sparse method and a check that the layout dit-sparse reads is the sequence ``attn1`` sees.
17 pixel frames -> 5 latent frames of 9 x 7 tokens = 315 video tokens, not a multiple of the 16-token blocks.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusers import LTX2Pipeline
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
from diffusers.pipelines.ltx2.pipeline_ltx2_hdr_lora import LTX2HDRReferenceCondition
from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2ReferenceCondition
from family_contract import SPARSE, STEPS, assert_family_contract
from tiny_ltx2 import (
    DFR_CALL,
    LTX2_CALL,
    PROMPTS,
    call_kwargs,
    refine_kwargs,
    tiny_image,
    tiny_ltx2_condition_pipeline,
    tiny_ltx2_dfr_pipeline,
    tiny_ltx2_dfr_temporal_refine_pipeline,
    tiny_ltx2_hdr_pipeline,
    tiny_ltx2_i2v_pipeline,
    tiny_ltx2_in_context_pipeline,
    tiny_ltx2_pipeline,
    tiny_video,
)

import dit_sparse as ds
from dit_sparse.integration.apply import sparse_state
from dit_sparse.pipelines import SparseLTX2Pipeline

FRAMES = 17  # (17 - 1) / 4 + 1 = 5 latent frames
GRID = (5, 9, 7)  # 315 video tokens; each appended latent frame adds 9 x 7 = 63 tokens
# The five attentions of a block that stay dense: audio self-attention, text and audio<->video cross-attention.
DENSE_ATTENTIONS = ("audio_attn1", "attn2", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")


def latent_kwargs(**extra: Any):
    """Fresh kwargs per call: two prompts with CFG, 3 steps, latent output as (video, audio)."""
    return lambda: call_kwargs(
        LTX2_CALL, output_type="latent", return_dict=False, num_frames=FRAMES, num_inference_steps=STEPS, **extra
    )


def video_and_audio(result: Any) -> torch.Tensor:
    """Both outputs in one tensor, so that a change to the audio latents fails the comparison too."""
    video, audio = result[0], result[1]
    return torch.cat([video.flatten(), audio.flatten()])


def conditions() -> list[LTX2VideoCondition]:
    # Index 0 overwrites latent frame 0 in place (timestep 0); index -1 appends one latent frame (63 tokens).
    return [LTX2VideoCondition(frames=tiny_image(), index=0, crf=0),
            LTX2VideoCondition(frames=tiny_image(seed=2), index=-1, crf=0)]  # fmt: skip


def dfr_kwargs():
    # No CFG and no negative prompt (distilled); 3 sigmas = 3 steps. Canvas 5 latent frames + 1 slot frame.
    return lambda: call_kwargs(DFR_CALL, negative_prompt=None, output_type="latent", return_dict=False,
                               num_frames=FRAMES, sigmas=[1.0, 0.67, 0.33])  # fmt: skip


def refine_stage_kwargs():
    """A DFR stage of one prompt (its canvas is not prompt-batched), refined at twice the frame rate:
    5 -> 9 latent frames in one temporal tile, + the carried keyframe and one slot frame (2 x 63 tokens)."""
    stage = tiny_ltx2_dfr_pipeline()(
        **call_kwargs(DFR_CALL, PROMPTS[0], negative_prompt=None, output_type="latent", num_frames=FRAMES)
    )
    return lambda: refine_kwargs(stage, output_type="latent", return_dict=False, sigmas=[0.75, 0.5, 0.25])


def assert_only_attn1_routed(transformer, processors: dict[tuple[int, str], Any]) -> None:
    """attn1 got dit-sparse's backend; the other attentions keep their processor objects and default backend."""
    for index, block in enumerate(transformer.transformer_blocks):
        assert block.attn1.processor._attention_backend is not None
        for name in DENSE_ATTENTIONS:
            processor = getattr(block, name).processor
            assert processor is processors[index, name] and processor._attention_backend is None, name


def dense_processors(transformer) -> dict[tuple[int, str], Any]:
    return {(index, name): getattr(block, name).processor
            for index, block in enumerate(transformer.transformer_blocks) for name in DENSE_ATTENTIONS}  # fmt: skip


@pytest.mark.parametrize(
    ("make_pipeline", "kwargs"),
    [(tiny_ltx2_pipeline, latent_kwargs()), (tiny_ltx2_condition_pipeline, latent_kwargs(conditions=conditions()))],
    ids=["t2v_ltx2.3", "condition_appended_keyframe"],
)
def test_contract_on_video_and_audio(make_pipeline, kwargs):
    assert_family_contract(make_pipeline(), kwargs, output=video_and_audio)


def reference(condition_class):
    # A 5-frame reference video -> 2 latent frames appended after the grid: 2 x 63 tokens.
    return lambda: latent_kwargs(reference_conditions=[condition_class(frames=tiny_video())])


# id: (pipeline factory, kwargs factory (called once), sparse method, (frames, rows, cols, suffix tokens))
LAYOUT_CASES = {
    "t2v_ltx2.3": (tiny_ltx2_pipeline, latent_kwargs, "radial", (*GRID, 0)),
    "i2v": (tiny_ltx2_i2v_pipeline, lambda: latent_kwargs(image=tiny_image(), image_crf=0), "radial", (*GRID, 0)),
    "condition": (tiny_ltx2_condition_pipeline, lambda: latent_kwargs(conditions=conditions()), "radial", (*GRID, 63)),
    "in_context": (tiny_ltx2_in_context_pipeline, reference(LTX2ReferenceCondition), "sparse_vdit", (*GRID, 126)),
    "hdr": (tiny_ltx2_hdr_pipeline, reference(LTX2HDRReferenceCondition), "adaspa", (*GRID, 126)),
    # Only video_coords reach the transformer: the grid is read from the coordinates; one slot frame appended.
    "dfr": (tiny_ltx2_dfr_pipeline, dfr_kwargs, "draft", (*GRID, 63)),
    "dfr_temporal_refine": (tiny_ltx2_dfr_temporal_refine_pipeline, refine_stage_kwargs, "radial", (9, 9, 7, 126)),
}


@pytest.mark.parametrize("case", list(LAYOUT_CASES))
def test_layout_is_the_sequence_video_self_attention_sees(case):
    """Every attn1 call's layout covers exactly its q/k length, with the expected grid and dense suffix; the
    method runs sparse for the 3 steps (counted from falling timesteps: the pipelines give no step index)."""
    make_pipeline, make_kwargs, method, expected = LAYOUT_CASES[case]
    pipe, kwargs = make_pipeline(), make_kwargs()
    processors = dense_processors(pipe.transformer)
    ds.apply_sparse_attention(pipe, SPARSE[method])
    assert_only_attn1_routed(pipe.transformer, processors)
    seen = set()

    def observe(state, layer, q, k, v):
        layout = state.layout
        assert q.shape[2] == k.shape[2] == layout.num_tokens
        seen.add((layout.frames, layout.height, layout.width, layout.text_len))

    sparse_state(pipe.transformer).observers.append(observe)
    video = pipe(**kwargs())[0]
    stats = ds.summary(pipe)
    assert seen == {expected}
    assert torch.isfinite(video).all()
    assert stats["mean_density"] < 0.9 and stats["steps"] == STEPS
    assert all(density is not None for density in stats["per_layer"])


def test_ltx2_0_audio_stays_bit_identical_when_dense_and_after_removal():
    """LTX-2.0 config (caption projection, no gates): audio latents are bit-identical under "dense" and after
    removal, the five dense attentions keep their processors, and sparse video attention changes the video."""
    pipe = tiny_ltx2_pipeline("2.0")
    kwargs = latent_kwargs()
    processors = dense_processors(pipe.transformer)
    video, audio = pipe(**kwargs())
    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("dense"))
    assert_only_attn1_routed(pipe.transformer, processors)
    dense_video, dense_audio = pipe(**kwargs())
    assert torch.equal(dense_audio, audio) and torch.equal(dense_video, video)
    ds.apply_sparse_attention(pipe, SPARSE["radial"])
    sparse_video, _ = pipe(**kwargs())
    assert not torch.equal(sparse_video, video) and ds.summary(pipe)["mean_density"] < 0.9
    ds.remove_sparse_attention(pipe)
    assert dense_processors(pipe.transformer) == processors
    removed_video, removed_audio = pipe(**kwargs())
    assert torch.equal(removed_audio, audio) and torch.equal(removed_video, video)


def test_in_context_video_self_attention_mask_is_refused():
    """conditioning_attention_strength < 1 makes LTX2InContextPipeline pass a (B, N, N) video_self_attention_mask,
    which the kernels cannot take: refused with the way out; the same call runs once dit-sparse is removed."""
    pipe = tiny_ltx2_in_context_pipeline()
    kwargs = latent_kwargs(
        reference_conditions=[LTX2ReferenceCondition(frames=tiny_video())], conditioning_attention_strength=0.5
    )
    ds.apply_sparse_attention(pipe, SPARSE["radial"])
    with pytest.raises(ValueError, match=r"video_self_attention_mask.*conditioning_attention_strength=1\.0"):
        pipe(**kwargs())
    ds.remove_sparse_attention(pipe)
    assert torch.isfinite(pipe(**kwargs())[0]).all()


def test_drop_in_pipeline_from_a_local_folder(tmp_path):
    pipe = tiny_ltx2_pipeline()
    kwargs = latent_kwargs()
    vanilla = video_and_audio(pipe(**kwargs()))
    pipe.save_pretrained(tmp_path)
    sparse_pipe = SparseLTX2Pipeline.from_pretrained(tmp_path, sparse_attention=SPARSE["radial"])
    sparse_pipe.set_progress_bar_config(disable=True)
    assert isinstance(sparse_pipe, LTX2Pipeline)
    sparse = video_and_audio(sparse_pipe(**kwargs()))
    assert torch.isfinite(sparse).all() and not torch.equal(sparse, vanilla)
    assert ds.summary(sparse_pipe)["mean_density"] < 1
    ds.remove_sparse_attention(sparse_pipe)
    assert torch.equal(video_and_audio(sparse_pipe(**kwargs())), vanilla)
