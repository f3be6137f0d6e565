"""The training script end to end at a toy size: it must write a folder that stock WanPipeline loads."""

from __future__ import annotations

import json

import numpy as np
import torch
from diffusers import WanPipeline

from dit_sparse.embedded import train
from dit_sparse.embedded.components import (
    build_text_encoder,
    build_tokenizer,
    build_transformer,
    encode_prompts,
    encode_prompts_compact,
    use_compact_prompts,
)


def test_training_writes_a_loadable_pipeline(tmp_path):
    out = tmp_path / "model"
    argv = ["--out", str(out), "--vae-phases", "2x5,1x3", "--clips", "4", "--encode-batch", "2", "--steps", "2"]
    argv += ["--low-res-steps", "2", "--num-frames", "5", "--height", "32", "--width", "32", "--vae-crop", "32"]
    assert train.main([*argv, "--warmup", "1", "--no-progress", "--threads", "1"]) == 0
    log = json.loads((out / "training.json").read_text())
    assert set(log["seconds"]) == {"vae", "encode", "transformer", "total"}
    assert log["latent_shape"] == [8, 3, 8, 8]  # x2 temporal, x4 spatial
    assert {"vae_2x5_loss_last_50", "vae_1x3_loss_last_50"} <= set(log)  # both VAE phases ran
    pipe = WanPipeline.from_pretrained(str(out), local_files_only=True)
    assert pipe.vae.config.latents_std != [1.0] * 8  # measured on the encoded clips, not the placeholders
    frames = pipe(
        "a red circle moving right", height=32, width=32, num_frames=5, num_inference_steps=1, output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).frames[0]  # fmt: skip
    assert np.asarray(frames).shape == (5, 32, 32, 3)


def test_prompt_embeddings_match_the_pipeline(tmp_path):
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    encoder = build_text_encoder(len(tokenizer)).eval()
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=encoder, transformer=None, vae=None, scheduler=None)
    prompts = ["a red circle moving right on a dark background", "a blue square moving up", ""]
    with torch.no_grad():
        expected = pipe._get_t5_prompt_embeds(prompts, max_sequence_length=512)
        ours = encode_prompts(tokenizer, encoder, prompts)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    assert ours[0, 10:].abs().sum() == 0 and ours[0, :10].abs().sum() > 0  # 9 words + </s>, zeros after


def test_compact_prompts_give_the_transformer_output_of_the_padded_ones():
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    encoder = build_text_encoder(len(tokenizer)).eval()
    transformer = build_transformer().eval()
    for p in transformer.parameters():  # random weights: make the zero rows' keys matter
        p.data.normal_(0, 0.1)
    prompts = ["a red circle moving right and a blue square moving up on a dark background", "a blue square", ""]
    x = torch.randn(3, 8, 3, 8, 8)
    t = torch.tensor([900.0, 500.0, 100.0])
    with torch.no_grad():
        expected = transformer(x, t, encode_prompts(tokenizer, encoder, prompts), return_dict=False)[0]
        embeds, bias = encode_prompts_compact(tokenizer, encoder, prompts)
        assert embeds.shape == (3, 17, 64) and bias[0, 0, 0, -1] == torch.tensor(512.0 - 16).log()  # 15 words + </s>
        wrappers = use_compact_prompts(transformer)
        for wrapper in wrappers:
            wrapper.bias = bias
        ours = transformer(x, t, embeds, return_dict=False)[0]
        for wrapper in wrappers:
            wrapper.bias = torch.zeros_like(bias)
        unbiased = transformer(x, t, embeds, return_dict=False)[0]
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    assert (unbiased - expected).abs().max() > 1e-2  # without the bias the padding weighs too little


def test_tokenizer_knows_every_prompt_word():
    tokenizer = build_tokenizer()
    ids = tokenizer("A Red circle moving LEFT and a yellow square moving down on a gray background").input_ids
    assert tokenizer.unk_token_id not in ids and ids[-1] == tokenizer.eos_token_id
