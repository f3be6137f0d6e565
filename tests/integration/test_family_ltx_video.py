"""LTX-Video (``LTXVideoTransformer3DModel``) through its tiny pipelines (tests/tiny_ltx_video.py): the family
contract, the layout dit-sparse reads against the sequence each self-attention sees, the condition pipeline's
prefix tokens, the refusal of sequences that are not one grid, the drop-in class, and a calibrated plan."""

from __future__ import annotations

import pytest
import torch
from family_contract import assert_family_contract
from tiny_ltx_video import (
    LTX_CALL,
    LTX_CONDITION_CALL,
    LTX_PIPELINES,
    TOKEN_GRID,
    tiny_ltx_condition_pipeline,
    tiny_ltx_pipeline,
    tiny_ltx_transformer,
)
from tiny_models import NEGATIVE_PROMPT, PROMPTS, call_kwargs

import dit_sparse as ds
from dit_sparse.calibration import SparsityPlan
from dit_sparse.integration import state as state_module
from dit_sparse.integration.apply import sparse_state
from dit_sparse.integration.specs import spec_for
from dit_sparse.layout import VideoLayout
from dit_sparse.pipelines import SparseLTXPipeline

FRAMES = 33  # (33 - 1) / 8 + 1 = 5 latent frames of 9 x 7 tokens: 315 video tokens
# The layout of each pipeline's 33-frame call: video tokens only, or the condition image's 63 tokens (one latent
# frame, pixel frame 16) first, as dense prefix rows and columns.
EXPECTED = {
    "ltx": VideoLayout(5, 9, 7),
    "ltx_i2v": VideoLayout(5, 9, 7),
    "ltx_condition": VideoLayout(5, 9, 7, text_len=63, text_position="prefix"),
    "ltx_condition_first_frame": VideoLayout(5, 9, 7),  # the frame-0 condition replaces latent frame 0
}
BATCH = {"ltx": 2, "ltx_i2v": 2, "ltx_condition": 1, "ltx_condition_first_frame": 2}
RADIAL = ds.SparseAttentionConfig("radial", block_size=16, backend="reference")
# "cover" keeps every block that holds a kept token pair, so the dense prefix and sink tokens keep whole blocks.
RADIAL_COVER = ds.SparseAttentionConfig("radial", block_size=16, backend="reference", block_rule="cover")


def latent_kwargs(call):
    return call_kwargs(call, output_type="latent", return_dict=False, num_frames=FRAMES, num_inference_steps=3)


def test_contract_text_to_video():
    """LTXPipeline, batch 2 with CFG (one transformer call of batch 4 per step), 315 tokens."""
    assert_family_contract(tiny_ltx_pipeline(), lambda: latent_kwargs(LTX_CALL))


def test_contract_with_a_condition_prefix():
    """LTXConditionPipeline with a condition image at frame 16: 63 prefix tokens + 315 video tokens (batch 1:
    diffusers cannot batch conditions at frame_index > 0)."""
    assert_family_contract(tiny_ltx_condition_pipeline(), lambda: latent_kwargs(LTX_CONDITION_CALL))


@pytest.mark.parametrize("name", list(LTX_PIPELINES))
def test_the_layout_is_the_sequence_self_attention_sees(name, monkeypatch):
    """Per pipeline: every attn1 call has the layout's token count (read from num_frames/height/width, or from
    video_coords in the condition pipeline) and gets no mask; the steps are counted from the timesteps (all LTX
    pipelines run cache_context without step_index; I2V and condition tokens sit at timestep 0). Radial keeps
    the blocks of the prefix rows and columns and of the columns of video frame 0 (the sink: sink_frames=1),
    and attn2, the cross-attention to the T5 text, keeps its own processor."""
    make_pipeline, call = LTX_PIPELINES[name]
    pipe = make_pipeline()
    cross = [block.attn2.processor for block in pipe.transformer.transformer_blocks]
    ds.apply_sparse_attention(pipe, RADIAL_COVER)
    seen, masks, tables = [], [], []
    sparse_state(pipe.transformer).observers.append(
        lambda state, layer, q, k, v: seen.append((layer, q.shape[0], q.shape[2], state.layout))
    )
    for block in pipe.transformer.transformer_blocks:
        block.attn1.register_forward_pre_hook(
            lambda module, args, kwargs: masks.append(kwargs.get("attention_mask")), with_kwargs=True
        )
    kernel = state_module.block_sparse_attention

    def recording_kernel(q, k, v, mask, **kwargs):  # the block table each sparse call runs
        tables.append(mask.blocks)
        return kernel(q, k, v, mask, **kwargs)

    monkeypatch.setattr(state_module, "block_sparse_attention", recording_kernel)
    out = pipe(**latent_kwargs(call))[0]
    assert len(seen) == 3 * 2  # steps x layers
    for layer, batch, tokens, layout in seen:
        assert layout == EXPECTED[name] and tokens == layout.num_tokens and batch == 2 * BATCH[name], layer
    assert masks == [None] * 6
    assert [block.attn2.processor for block in pipe.transformer.transformer_blocks] == cross
    prefix = EXPECTED[name].text_len
    rows, cols = -(-prefix // 16), -(-(prefix + 9 * 7) // 16)  # blocks holding prefix (and frame 0) tokens
    assert len(tables) == 6 and all(t[..., :rows, :].all() and t[..., :cols].all() and not t.all() for t in tables)
    stats = ds.summary(pipe)
    assert stats["steps"] == 3 and stats["mean_density"] < 1 and torch.isfinite(out).all()


def test_sequences_that_are_not_one_grid_are_refused():
    """video_coords of appended frames with repeated coordinates (LTXI2VLongMultiPromptPipeline) are refused
    with a message that says what to do; a prefix before frame coordinate 0 is read as dense tokens."""
    transformer = tiny_ltx_transformer()
    read = spec_for(transformer).read_layout
    f, h, w = torch.meshgrid(torch.arange(3.0), torch.arange(2.0) * 32, torch.arange(2.0) * 32, indexing="ij")
    coords = torch.stack([f.reshape(-1), h.reshape(-1), w.reshape(-1)])[None]  # (1, 3, 12): frame, y, x
    assert read(transformer, {"video_coords": coords}) == VideoLayout(3, 2, 2)
    prefix = coords[:, :, 4:8] + torch.tensor([0.64, 0.0, 0.0])[:, None]  # one later frame placed first
    with_prefix = torch.cat([prefix, coords], dim=2)
    assert read(transformer, {"video_coords": with_prefix}) == VideoLayout(3, 2, 2, 4, text_position="prefix")
    appended = torch.cat([coords, coords[:, :, :4]], dim=2)  # frame 0 again at the end
    with pytest.raises(ValueError, match=r"LTXI2VLongMultiPromptPipeline.*run those without dit-sparse"):
        read(transformer, {"video_coords": appended})
    with pytest.raises(ValueError, match="neither video_coords nor num_frames"):
        read(transformer, {})


def test_drop_in_pipeline_from_a_local_folder(tmp_path):
    pipe = tiny_ltx_pipeline()
    vanilla = pipe(**latent_kwargs(LTX_CALL))[0]
    pipe.save_pretrained(tmp_path)
    sparse_pipe = SparseLTXPipeline.from_pretrained(tmp_path, sparse_attention=RADIAL)
    assert isinstance(sparse_pipe, type(pipe))
    sparse = sparse_pipe(**latent_kwargs(LTX_CALL))[0]
    assert sparse.shape == vanilla.shape and torch.isfinite(sparse).all() and not torch.equal(sparse, vanilla)
    assert 0 < ds.summary(sparse_pipe)["mean_density"] < 1
    ds.remove_sparse_attention(sparse_pipe)
    assert torch.equal(sparse_pipe(**latent_kwargs(LTX_CALL))[0], vanilla)


def test_calibrate_save_load_and_run_the_plan(tmp_path):
    """ds.calibrate on LTXPipeline (17 frames: 3 x 9 x 7 tokens), the plan saved and loaded, then run as a
    plan config: each step uses its bucket's head densities, and two runs are identical."""
    pipe = tiny_ltx_pipeline()
    call = {k: LTX_CALL[k] for k in ("height", "width", "num_frames", "guidance_scale", "max_sequence_length")}
    plan = ds.calibrate(
        pipe, PROMPTS, target_recall=0.9, num_inference_steps=3, step_buckets=[0, 1], steps_per_bucket=1,
        block_size=16, negative_prompt=NEGATIVE_PROMPT, progress=False, **call,
    )  # fmt: skip
    p = plan.provenance
    assert (p.model_class, p.num_layers, p.heads_per_layer) == ("LTXVideoTransformer3DModel", 2, [2, 2])
    assert p.layout == VideoLayout(*TOKEN_GRID) and [(b.start, b.stop) for b in plan.buckets] == [(0, 1), (1, None)]
    assert all(head.recall >= 0.9 for bucket in plan.buckets for heads in bucket.layers for head in heads)

    loaded = SparsityPlan.load(plan.save(tmp_path / "plan.json"))
    assert loaded == plan
    config = ds.SparseAttentionConfig("sparse_vdit", plan=tmp_path / "plan.json", block_size=16, backend="reference")
    ds.apply_sparse_attention(pipe, config)
    assert sparse_state(pipe.transformer).config.plan == plan

    def run():
        return pipe(**call_kwargs(LTX_CALL, output_type="latent", return_dict=False, num_inference_steps=3))[0]

    first, stats = run(), ds.summary(pipe)
    head_density = [[sum(h.density for h in heads) / len(heads) for heads in b.layers] for b in loaded.buckets]
    expected = [(head_density[0][layer] + 2 * head_density[1][layer]) / 3 for layer in range(2)]
    assert stats["per_layer"] == pytest.approx(expected, abs=1e-9)  # step 0: bucket 0; steps 1 and 2: bucket 1
    assert stats["mean_density"] < 1 and torch.isfinite(first).all()
    assert torch.equal(run(), first)
