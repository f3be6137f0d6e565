"""Train the embedded default model from scratch on procedural videos, reproducibly, on a CPU.

    python -m dit_sparse.embedded.train --out assets/wan-tiny-t2v

Three stages, all seeded (``--seed``):

1. VAE: ``AutoencoderKLWan`` on 64 x 64 crops around the objects of 5-frame, then 9-frame, then 17-frame
   clips (``--vae-phases``; the VAE is convolutional and causal in time, so crops teach it what full frames
   need, and the long clips the chunks that follow cached ones), loss MSE + L1 with object pixels weighted
   ``1 + --object-weight`` (they are a few percent of the pixels; unweighted, the VAE learns the backgrounds
   and turns a red circle grey), plus a small KL term.
2. Latents: ``--clips`` scenes rendered at the default size and as many at half the size, each encoded once
   (posterior mean); the per-channel mean and std of the full-size latents go into the VAE config as
   ``latents_mean`` / ``latents_std``, as Wan's VAE has them.
3. Transformer and text encoder: rectified-flow matching (x_t = (1 - s) x_0 + s e, target e - x_0, which is
   what Wan's ``flow_prediction`` scheduler inverts), s uniform then shifted like the scheduler's sigmas,
   10% empty prompts for classifier-free guidance, AdamW with warm-up and cosine decay, an EMA of the
   weights (the EMA is what is saved). Progressive resolution: ``--low-res-steps`` at half the size
   (a quarter of the tokens, about 5x cheaper a step: colours, shapes and motion are learnt there), then
   ``--steps`` at the default size. The prompts enter training without the pipeline's 512-row zero padding
   (``components.encode_prompts_compact``: one zero row with a log-count score bias, which gives the same
   outputs, tested), which halves the cost of a half-size step.

Stages 1 and 2 leave their results in ``--work`` (default ``OUT.work``); a rerun with the same folder skips
them, so the transformer can be retrained alone.

The result is a diffusers folder that ``WanPipeline.from_pretrained`` loads, plus ``training.json`` with the
arguments, losses, stage times and the machine. Bit-exact reproduction needs the same torch build and thread
count; on other machines the numbers differ slightly, the behaviour does not.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import WanPipeline
from tqdm.auto import tqdm

from ..utils import package_version
from .components import (
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_transformer,
    build_vae,
    encode_prompts_compact,
    use_compact_prompts,
)
from .scenes import random_scene, render

logger = logging.getLogger(__name__)

DEFAULT_SIZE = {"num_frames": 17, "height": 128, "width": 128}


def _to_model_range(videos: np.ndarray) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, H, W) float in [-1, 1]."""
    return torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def object_crop(
    video: np.ndarray, background_rgb: tuple[int, int, int], crop: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A ``crop`` x ``crop`` window of ``video`` (T, H, W, 3) around a random object pixel, and its object mask.

    The mask (T, crop, crop) marks pixels that differ from the background by more than 24 in some channel.
    The window is centred on a pixel drawn from the mask of every frame (shifted to stay inside the frame),
    or placed at random when no object is visible.
    """
    _, height, width, _ = video.shape
    mask = (np.abs(video.astype(np.int16) - np.asarray(background_rgb, dtype=np.int16)) > 24).any(-1)
    ys, xs = np.nonzero(mask.any(0))
    if len(ys):
        pick = int(rng.integers(len(ys)))
        y0 = int(np.clip(ys[pick] - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, height - crop))
        x0 = int(np.clip(xs[pick] - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, width - crop))
    else:
        y0, x0 = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
    return video[:, y0 : y0 + crop, x0 : x0 + crop], mask[:, y0 : y0 + crop, x0 : x0 + crop]


def train_vae(args: argparse.Namespace, rng: np.random.Generator, log: dict) -> torch.nn.Module:
    """Phases of ``--vae-phases`` ("STEPSxFRAMES,..."): short clips first (cheap; colours and shapes), then
    longer ones at 0.3x the rate, up to the generation length, so the causal decoder learns every chunk that
    follows cached ones (a VAE trained on 5-frame clips alone drifts from frame 6 on, one trained up to 9
    frames from frame 13 on). ``--vae-init DIR --vae-resume-phase K`` starts from a saved VAE at phase K."""
    from diffusers import AutoencoderKLWan

    phases = [
        (f"vae {steps}x{frames}", steps, frames, args.vae_lr if i == 0 else args.vae_lr * 0.3)
        for i, (steps, frames) in enumerate(args.vae_phases)
    ]
    if args.vae_init is not None:
        vae = AutoencoderKLWan.from_pretrained(args.vae_init)
        phases = phases[args.vae_resume_phase - 1 :]
        log["vae_init"] = f"{args.vae_init} (phases {args.vae_resume_phase}-{len(args.vae_phases)} run here)"
    else:
        vae = build_vae()
    vae.train()
    for name, steps, frames, lr in phases:
        optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
        losses = []
        for step in tqdm(range(steps), desc=name, disable=not args.progress):
            batch, masks = [], []
            for _ in range(args.vae_batch):
                scene = random_scene(rng)
                video = render(scene, frames, args.height, args.width)
                clip, mask = object_crop(video, scene.background_rgb, args.vae_crop, rng)
                batch.append(clip)
                masks.append(mask)
            x = _to_model_range(np.stack(batch))
            # Objects cover a few percent of the pixels; weighting them keeps their colour from averaging away.
            weight = 1.0 + args.object_weight * torch.from_numpy(np.stack(masks)).float()[:, None]  # (B, 1, T, h, w)
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample()).sample
            error = recon - x
            reconstruction = (weight * (error.pow(2) + 0.5 * error.abs())).sum() / (weight.sum() * x.shape[1])
            loss = reconstruction + args.kl_weight * posterior.kl().mean()
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, steps, lr, warmup=min(50, max(steps // 10, 1)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
        if losses:
            log[f"{name.replace(' ', '_')}_loss_first_50"] = float(np.mean(losses[:50]))
            log[f"{name.replace(' ', '_')}_loss_last_50"] = float(np.mean(losses[-50:]))
    return vae.eval()


@torch.no_grad()
def encode_dataset(
    vae: torch.nn.Module, args: argparse.Namespace, rng: np.random.Generator, size: tuple[int, int, int]
) -> tuple[torch.Tensor, list[str]]:
    """``args.clips`` random scenes rendered at ``size`` = (frames, height, width), encoded to latent means."""
    latents, prompts = [], []
    for start in tqdm(range(0, args.clips, args.encode_batch), desc=f"encode {size}", disable=not args.progress):
        scenes = [random_scene(rng) for _ in range(min(args.encode_batch, args.clips - start))]
        videos = np.stack([render(s, *size) for s in scenes])
        latents.append(vae.encode(_to_model_range(videos)).latent_dist.mode())
        prompts.extend(s.prompt for s in scenes)
    return torch.cat(latents), prompts  # (clips, C, F', H', W')


@torch.no_grad()
def vae_held_out_psnr(vae: torch.nn.Module, args: argparse.Namespace) -> float:
    """Reconstruction PSNR (dB) on a clip of its own seed, not drawn from the training stream."""
    held_out = render(random_scene(np.random.default_rng(args.seed + 1)), args.num_frames, args.height, args.width)
    video = _to_model_range(held_out[None])
    recon = vae.decode(vae.encode(video).latent_dist.mode()).sample.clamp(-1, 1)
    mse = F.mse_loss((recon + 1) / 2, (video + 1) / 2).item()
    return round(10 * math.log10(1.0 / max(mse, 1e-12)), 2)


def prepare_latents(args: argparse.Namespace, rng: np.random.Generator, log: dict) -> tuple[torch.nn.Module, dict]:
    """Stages 1 and 2, or their results from ``args.work`` when a previous run left them there."""
    from diffusers import AutoencoderKLWan

    vae_dir, data_file = args.work / "vae", args.work / "latents.pt"
    if (vae_dir / "config.json").is_file() and data_file.is_file():
        logger.info("reusing the VAE and latents in %s", args.work)
        data = torch.load(data_file, weights_only=True)
        return AutoencoderKLWan.from_pretrained(vae_dir).eval(), data
    t0 = time.perf_counter()
    vae = train_vae(args, rng, log)
    log["seconds"]["vae"] = round(time.perf_counter() - t0, 1)
    t1 = time.perf_counter()
    full, prompts = encode_dataset(vae, args, rng, (args.num_frames, args.height, args.width))
    low, low_prompts = encode_dataset(vae, args, rng, (args.num_frames, args.height // 2, args.width // 2))
    log["seconds"]["encode"] = round(time.perf_counter() - t1, 1)
    mean, std = full.mean(dim=(0, 2, 3, 4)), full.std(dim=(0, 2, 3, 4))
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
    log["vae_held_out_psnr_db"] = vae_held_out_psnr(vae, args)

    def normalized(x: torch.Tensor) -> torch.Tensor:
        return (x - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)

    data = {"full": normalized(full), "full_prompts": prompts, "low": normalized(low), "low_prompts": low_prompts}
    args.work.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(vae_dir, safe_serialization=True)
    torch.save(data, data_file)
    return vae, data


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p, 1 - decay)


def train_transformer(data: dict, args: argparse.Namespace, log: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(len(tokenizer)).train()
    transformer = build_transformer().train()
    params = list(transformer.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    ema_transformer, ema_text = copy.deepcopy(transformer).eval(), copy.deepcopy(text_encoder).eval()
    # The prompts without their hundreds of zero rows, which weigh the same through a score bias: same outputs,
    # about half the time of a half-resolution step (the EMA copies, which are saved, keep the stock processors).
    cross_attention = use_compact_prompts(transformer)
    generator = torch.Generator().manual_seed(args.seed)
    total = args.low_res_steps + args.steps
    losses = []
    for step in tqdm(range(total), desc="transformer", disable=not args.progress):
        size = "low" if step < args.low_res_steps else "full"
        latents, prompts = data[size], data[f"{size}_prompts"]
        index = torch.randint(len(latents), (args.batch,), generator=generator)
        x0 = latents[index]
        batch_prompts = [
            "" if torch.rand((), generator=generator).item() < args.uncond_probability else prompts[i]
            for i in index.tolist()
        ]
        # s as the sampler visits it: uniform u, shifted like its sigmas, sigma = shift * u / (1 + (shift - 1) * u).
        # (A logit-normal u, as large models use, almost never trains sigma near 1, where sampling starts.)
        u = torch.rand(args.batch, generator=generator)
        sigma = args.shift * u / (1 + (args.shift - 1) * u)
        noise = torch.randn(x0.shape, generator=generator)
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        text, bias = encode_prompts_compact(tokenizer, text_encoder, batch_prompts)
        for processor in cross_attention:
            processor.bias = bias
        prediction = transformer(xt, sigma * 1000, text, return_dict=False)[0]
        loss = F.mse_loss(prediction, noise - x0)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, total, args.lr, warmup=args.warmup)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        _ema_update(ema_transformer, transformer, decay)
        _ema_update(ema_text, text_encoder, decay)
        losses.append(loss.item())
    window = max(1, min(100, len(losses) // 4))
    log["transformer_loss_first"] = float(np.mean(losses[:window]))
    log["transformer_loss_last"] = float(np.mean(losses[-window:]))
    return ema_transformer, ema_text


def _phases(text: str) -> list[tuple[int, int]]:
    try:
        phases = [tuple(int(x) for x in part.split("x")) for part in text.split(",")]
    except ValueError:
        phases = []
    if not phases or any(len(p) != 2 or p[0] < 0 or p[1] < 1 for p in phases):
        raise argparse.ArgumentTypeError(f"expected STEPSxFRAMES[,STEPSxFRAMES...], got {text!r}")
    return phases


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dit_sparse.embedded.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder to write the diffusers pipeline to")
    p.add_argument("--work", type=Path, help="folder for the VAE and latents between stages (default: OUT.work)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-frames", type=int, default=DEFAULT_SIZE["num_frames"])
    p.add_argument("--height", type=int, default=DEFAULT_SIZE["height"])
    p.add_argument("--width", type=int, default=DEFAULT_SIZE["width"])
    p.add_argument("--vae-batch", type=int, default=4)
    p.add_argument(
        "--vae-phases",
        type=_phases,
        default=_phases("1200x5,300x9,150x17"),
        help="VAE phases as STEPSxFRAMES, comma-separated (default 1200x5,300x9,150x17)",
    )
    p.add_argument("--vae-init", type=Path, help="start from this saved VAE ...")
    p.add_argument("--vae-resume-phase", type=int, default=2, help="... at this phase of --vae-phases (1-based)")
    p.add_argument("--vae-crop", type=int, default=64)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--object-weight", type=float, default=9.0, help="extra loss weight of object pixels (VAE)")
    p.add_argument("--clips", type=int, default=1500, help="training clips at each of the two sizes")
    p.add_argument("--encode-batch", type=int, default=8)
    p.add_argument("--low-res-steps", type=int, default=6500, help="transformer steps at half the size")
    p.add_argument("--steps", type=int, default=500, help="transformer steps at the full size")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--shift", type=float, default=2.0)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--uncond-probability", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    if args.vae_crop > min(args.height, args.width):
        p.error(f"--vae-crop {args.vae_crop} is larger than the frame ({args.height} x {args.width})")
    args.work = args.work or args.out.with_name(args.out.name + ".work")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    log: dict = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": args.threads},
        "torch": torch.__version__,
        "dit_sparse": package_version("dit-sparse"),
        "seconds": {},
    }
    t0 = time.perf_counter()
    vae, data = prepare_latents(args, rng, log)
    log["latent_shape"] = list(data["full"].shape[1:])
    t2 = time.perf_counter()
    transformer, text_encoder = train_transformer(data, args, log)
    log["seconds"]["transformer"] = round(time.perf_counter() - t2, 1)
    log["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    # A fresh tokenizer: the trained one would save the padding state of its last call in tokenizer.json.
    pipe = WanPipeline(
        tokenizer=build_tokenizer(),
        text_encoder=text_encoder,
        transformer=transformer,
        vae=vae,
        scheduler=build_scheduler(),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(args.out, safe_serialization=True)
    (args.out / "training.json").write_text(json.dumps(log, indent=2) + "\n")
    logger.info("wrote %s in %.0f s", args.out, log["seconds"]["total"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
