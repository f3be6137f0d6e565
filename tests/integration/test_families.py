"""The model-support contract (family_contract.py) for SkyReels-V2, Wan VACE and Mochi, and Mochi's per-sample
attention; the other new families have a test_family_<name>.py each."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from family_contract import assert_family_contract
from tiny_models import (
    FAMILIES,
    MOCHI_CALL,
    WAN_CALL,
    call_kwargs,
    skyreels_scheduler,
    tiny_mochi_pipeline,
    wan_family_i2v_pipeline,
)

import dit_sparse as ds
from dit_sparse.integration.apply import sparse_state

# Pixel frames that give 5 latent frames (the VAE's temporal factor differs): 5 x 9 x 7 = 315 video tokens.
FIVE_LATENT_FRAMES = {"skyreels_v2": 17, "wan_vace": 17, "mochi": 25}


@pytest.mark.parametrize("family", list(FIVE_LATENT_FRAMES))
def test_exact_when_dense_sparse_otherwise_and_removable(family):
    call = FAMILIES[family][2]
    frames = FIVE_LATENT_FRAMES[family]
    assert_family_contract(
        FAMILIES[family][1](),
        lambda: call_kwargs(call, output_type="latent", return_dict=False, num_frames=frames, num_inference_steps=3),
    )


@pytest.mark.parametrize("family", ["wan", "skyreels_v2"])
def test_image_to_video_pipelines_of_wan_and_skyreels(family):
    """WanImageToVideoPipeline and SkyReelsV2ImageToVideoPipeline: the image conditions through input channels
    and CLIP tokens in cross-attention, so self-attention stays over the 5 x 9 x 7 video grid."""
    from diffusers import (
        SkyReelsV2ImageToVideoPipeline,
        SkyReelsV2Transformer3DModel,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )

    classes = {
        "wan": (WanImageToVideoPipeline, WanTransformer3DModel, None),
        "skyreels_v2": (SkyReelsV2ImageToVideoPipeline, SkyReelsV2Transformer3DModel, skyreels_scheduler()),
    }
    pipe = wan_family_i2v_pipeline(*classes[family])
    y, x = np.mgrid[0:144, 0:112]
    image = PIL.Image.fromarray(np.stack([x * 2, y, x + y], axis=-1).astype(np.uint8))
    assert_family_contract(
        pipe,
        lambda: call_kwargs(
            WAN_CALL, image=image, output_type="latent", return_dict=False, num_frames=17, num_inference_steps=3
        ),
    )


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
