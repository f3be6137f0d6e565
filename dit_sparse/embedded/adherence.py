"""Model-free prompt adherence for the embedded model (VBench-style: colour and motion direction).

For a generated video of one moving object on a plain background, the background colour is the median
colour over all pixels of all frames (the object covers a small part of each frame), the object is every
pixel that differs from it by more than ``threshold`` in some channel, its colour is the named colour
nearest to the median colour of those pixels, and its direction is the sign of the larger component of the
displacement of the object's centroid between the first and last frames where it is visible. A video
whose object does not move by at least ``min_travel`` of the frame reads as direction ``"none"``, which
counts as a miss, as does a video with no object at all.

``measure_adherence`` generates ``count`` seeded samples whose prompts cycle through every colour and
direction (``scenes.evaluation_scenes``) and reports the fraction whose colour, and whose direction, match
the prompt. ``benchmarks/prompt_adherence.py`` runs it from the command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..utils import pipeline_frames
from . import GENERATION_DEFAULTS
from .scenes import COLORS, DIRECTIONS, evaluation_scenes, render


@dataclass(frozen=True)
class ObjectReading:
    """What ``read_object`` saw: colour name (or "none"), direction name (or "none"), displacement (dy, dx)."""

    color: str
    direction: str
    displacement: tuple[float, float]
    foreground_fraction: float


def read_object(video: np.ndarray, *, threshold: float = 40.0, min_travel: float = 0.05) -> ObjectReading:
    """Colour and direction of motion of the moving object in a (T, H, W, 3) uint8 video.

    Args:
        video (`np.ndarray`): (T, H, W, 3) uint8, T >= 2.
        threshold (`float`, defaults to 40): per-channel difference from the background (0-255) that makes a
            pixel part of the object.
        min_travel (`float`, defaults to 0.05): the smallest centroid displacement, as a fraction of the frame
            size along its axis, that counts as motion.
    """
    if video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] < 2:
        raise ValueError(f"expected a (T >= 2, H, W, 3) video, got shape {tuple(video.shape)}")
    frames = video.astype(np.float32)
    background = np.median(frames.reshape(-1, 3), axis=0)  # (3,)
    foreground = np.abs(frames - background).max(axis=-1) > threshold  # (T, H, W)
    T, H, W = foreground.shape
    visible = [t for t in range(T) if foreground[t].sum() >= max(4, 0.002 * H * W)]
    fraction = float(foreground.mean())
    if not visible:
        return ObjectReading("none", "none", (0.0, 0.0), fraction)
    pixels = frames[foreground]  # (P, 3)
    rgb = np.median(pixels, axis=0)
    names = list(COLORS)
    prototypes = np.asarray([COLORS[n] for n in names], dtype=np.float32)
    color = names[int(np.argmin(((prototypes - rgb) ** 2).sum(axis=1)))]
    ys, xs = np.mgrid[0:H, 0:W]

    def centroid(t: int) -> tuple[float, float]:
        m = foreground[t]
        return float(ys[m].mean()) / H, float(xs[m].mean()) / W

    (y0, x0), (y1, x1) = centroid(visible[0]), centroid(visible[-1])
    dy, dx = y1 - y0, x1 - x0
    if max(abs(dy), abs(dx)) < min_travel:
        direction = "none"
    elif abs(dx) >= abs(dy):
        direction = "right" if dx > 0 else "left"
    else:
        direction = "down" if dy > 0 else "up"
    return ObjectReading(color, direction, (dy, dx), fraction)


def contact_sheet(videos: list[np.ndarray], frames: int = 5) -> np.ndarray:
    """One row per video of ``frames`` evenly spaced frames (first and last included): (rows*H, frames*W, 3) uint8.

    What the adherence numbers were read from, for a reader to look at: a moving object shows as the same
    shape stepping across a row.
    """
    if not videos:
        raise ValueError("no videos to lay out")
    shape = videos[0].shape
    if any(v.shape != shape for v in videos) or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"expected videos of one (T, H, W, 3) shape, got {sorted({tuple(v.shape) for v in videos})}")
    picks = np.linspace(0, shape[0] - 1, num=min(frames, shape[0])).round().astype(int)
    return np.concatenate([np.concatenate(list(v[picks]), axis=1) for v in videos], axis=0)


def measure_adherence(
    pipe,
    *,
    count: int = 40,
    seed: int = 0,
    call_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    keep_videos: bool = False,
) -> dict[str, Any]:
    """Generate ``count`` seeded samples and score colour and direction against their prompts.

    Args:
        pipe: a text-to-video pipeline (the embedded one, possibly with sparse attention applied).
        count (`int`, defaults to 40): samples; prompts cycle through all (colour, direction) pairs.
        seed (`int`, defaults to 0): sample i uses generator seed ``seed + i``.
        call_kwargs (`dict`, *optional*): extra pipeline arguments (size, steps, guidance).
        progress (`bool`, defaults to True): show a progress bar.
        keep_videos (`bool`, defaults to False): also return the generated videos under ``"videos"``.

    Returns:
        ``{"count", "color_accuracy", "direction_accuracy", "samples": [{"prompt", "color", "direction", ...}]}``
    """
    samples, videos = [], []
    for i, scene in enumerate(tqdm(evaluation_scenes(count), desc="adherence", disable=not progress)):
        obj = scene.objects[0]
        generator = torch.Generator("cpu").manual_seed(seed + i)
        kwargs = {"output_type": "np", **(call_kwargs or {})}
        video = pipeline_frames(pipe(scene.prompt, generator=generator, **kwargs))
        reading = read_object(video)
        if keep_videos:
            videos.append(video)
        samples.append(
            {
                "prompt": scene.prompt,
                "seed": seed + i,
                "expected_color": obj.color,
                "expected_direction": obj.direction,
                "color": reading.color,
                "direction": reading.direction,
                "displacement": [round(v, 4) for v in reading.displacement],
            }
        )
    color_hits = sum(s["color"] == s["expected_color"] for s in samples)
    direction_hits = sum(s["direction"] == s["expected_direction"] for s in samples)
    result = {
        "count": len(samples),
        "color_accuracy": color_hits / max(len(samples), 1),
        "direction_accuracy": direction_hits / max(len(samples), 1),
        "directions": list(DIRECTIONS),
        "samples": samples,
    }
    if keep_videos:
        result["videos"] = videos
    return result


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/prompt_adherence.py [--count 40] [--method radial] [--model DIR] [--out adherence.json]``."""
    import argparse
    import json

    from . import load_pipeline

    parser = argparse.ArgumentParser(description="Colour and direction adherence of the embedded model.")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="dense", help="a SparseAttentionConfig method (default: dense)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="method parameter")
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--model", help="a WanPipeline folder to measure instead of the embedded model")
    parser.add_argument(
        "--guidance-scale", type=float, help=f"default: the model's own ({GENERATION_DEFAULTS['guidance_scale']})"
    )
    parser.add_argument("--out", help="write the full result (every sample) as JSON here")
    parser.add_argument("--sheet", help="write a PNG contact sheet here: one row of 5 frames per sample, in order")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    from ..config import SparseAttentionConfig
    from ..integration.apply import apply_sparse_attention
    from ..utils import parse_params

    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    config = SparseAttentionConfig(args.method, block_size=args.block_size, **parse_params(args.param))
    apply_sparse_attention(pipe, config)
    generation = dict(GENERATION_DEFAULTS)
    if args.guidance_scale is not None:
        generation["guidance_scale"] = args.guidance_scale
    result = measure_adherence(
        pipe,
        count=args.count,
        seed=args.seed,
        call_kwargs=generation,
        progress=args.progress,
        keep_videos=bool(args.sheet),
    )
    if args.sheet:
        import imageio.v3 as iio

        iio.imwrite(args.sheet, contact_sheet(result.pop("videos")))
    result["config"] = config.to_dict()
    result["generation"] = generation
    result["model"] = args.model or "embedded"
    print(
        f"{args.method}: colour {result['color_accuracy']:.1%} ({result['count']} samples), "
        f"direction {result['direction_accuracy']:.1%}"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


# One word of the probe prompt swapped for each attribute the prompts name.
SENSITIVITY_PROMPT = "a red circle moving right on a dark background"
SENSITIVITY_SWAPS = {
    "direction": ("right", "left"),
    "colour": ("red", "blue"),
    "shape": ("circle", "square"),
    "background": ("dark", "light"),
}


@torch.no_grad()
def word_sensitivity(
    pipe, *, sigmas: tuple[float, ...] = (0.9, 0.6, 0.3), seed: int = 0, latent_shape: tuple[int, ...] = (8, 9, 32, 32)
) -> dict[str, dict[str, float]]:
    """How much the transformer's prediction depends on each word of ``SENSITIVITY_PROMPT``.

    For each sigma, the transformer predicts on one seeded noise latent (``latent_shape`` without the batch)
    with the probe prompt and with each one-word swap (and with the empty prompt); the result is
    ``|v(swapped) - v(prompt)| / |v(prompt)|`` (relative L2) per attribute and sigma. A word the model ignores
    scores near 0 while the others do not. Prompt embeddings are the pipeline's own (512 padded rows).
    Under ``"text_encoder"`` the same relative L2 for the prompt embeddings themselves: a word the text
    encoder barely separates cannot steer the transformer much.
    """
    prompts = {"prompt": SENSITIVITY_PROMPT, "empty": ""}
    prompts.update({k: SENSITIVITY_PROMPT.replace(a, b) for k, (a, b) in SENSITIVITY_SWAPS.items()})
    device, dtype = pipe.transformer.device, pipe.transformer.dtype
    embeds = {
        name: pipe.encode_prompt(text, do_classifier_free_guidance=False, device=device)[0].to(dtype)
        for name, text in prompts.items()
    }

    def changes(values: dict[str, torch.Tensor]) -> dict[str, float]:
        base = values["prompt"].float()
        return {
            name: round((x.float() - base).norm().item() / base.norm().item(), 5)
            for name, x in values.items()
            if name != "prompt"
        }

    result = {"text_encoder": changes(embeds)}
    latent = torch.randn((1, *latent_shape), generator=torch.Generator("cpu").manual_seed(seed)).to(device, dtype)
    for sigma in sigmas:
        t = torch.full((1,), sigma * 1000.0, device=device, dtype=dtype)
        v = {name: pipe.transformer(latent, t, e, return_dict=False)[0] for name, e in embeds.items()}
        result[f"sigma={sigma}"] = changes(v)
    return result


OPPOSITE_DIRECTIONS = {"left": "right", "right": "left", "up": "down", "down": "up"}


@torch.no_grad()
def direction_steering(
    pipe,
    *,
    strengths: tuple[float, ...] = (0.6, 0.8, 0.9, 1.0),
    count: int = 16,
    seed: int = 0,
    call_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Does the direction word steer a sample, or only the noise? Video-to-video from rendered clips.

    For each of ``count`` evaluation scenes (``scenes.evaluation_scenes``), the clip is rendered at the call's
    size (``call_kwargs`` over ``GENERATION_DEFAULTS``), encoded, noised to the sigma that ``strength``
    selects and sampled back to a video with diffusers' stock ``WanVideoToVideoPipeline`` (built from
    ``pipe``'s components), once with the scene's prompt and once with its direction word replaced by the
    opposite one; ``read_object`` reads the direction of each result.
    Per strength: ``follows_clip`` (true prompt: the result moves as the clip did), ``swapped_follows_word``
    (swapped prompt: the result moves as the swapped word says) and ``swapped_follows_clip``. A model that
    uses the word has ``swapped_follows_word`` rising towards 1 as the strength (the starting noise) rises;
    strength 1.0 starts from pure noise, where the clip carries no information.
    """
    from diffusers import WanVideoToVideoPipeline
    from PIL import Image

    if not strengths or not all(0.0 < s <= 1.0 for s in strengths):
        raise ValueError(f"strengths must be in (0, 1], got {list(strengths)}")

    v2v = WanVideoToVideoPipeline(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        transformer=pipe.transformer,
        vae=pipe.vae,
        scheduler=pipe.scheduler,
    )
    v2v.set_progress_bar_config(disable=True)
    kwargs = {**GENERATION_DEFAULTS, **(call_kwargs or {})}
    frames, height, width = kwargs.pop("num_frames"), kwargs["height"], kwargs["width"]
    steps = kwargs["num_inference_steps"]
    guided = kwargs["guidance_scale"] > 1.0
    scenes = evaluation_scenes(count)
    clips = [[Image.fromarray(frame) for frame in render(scene, frames, height, width)] for scene in scenes]
    rows: dict[str, Any] = {}
    for strength in strengths:
        v2v.scheduler.set_timesteps(steps)
        _, run_steps = v2v.get_timesteps(steps, v2v.scheduler.timesteps, strength, "cpu")  # the pipeline's own cut
        start = steps - run_steps
        counts = {"follows_clip": 0, "swapped_follows_word": 0, "swapped_follows_clip": 0}
        for i, (scene, clip) in enumerate(
            tqdm(list(zip(scenes, clips, strict=True)), desc=f"steering {strength}", disable=not progress)
        ):
            direction = scene.objects[0].direction
            swapped = scene.prompt.replace(f"moving {direction}", f"moving {OPPOSITE_DIRECTIONS[direction]}")
            readings = []
            for prompt in (scene.prompt, swapped):
                # Embedded by the text-to-video pipeline (the video-to-video one cleans prompts with ftfy, which
                # diffusers does not install); with the empty negative prompt, as both pipelines would use.
                embeds, negative = pipe.encode_prompt(prompt, do_classifier_free_guidance=guided)
                generator = torch.Generator("cpu").manual_seed(seed + i)
                out = v2v(
                    video=clip,
                    prompt_embeds=embeds,
                    negative_prompt_embeds=negative,
                    strength=strength,
                    generator=generator,
                    output_type="np",
                    **kwargs,
                )
                readings.append(read_object(pipeline_frames(out)).direction)
            counts["follows_clip"] += readings[0] == direction
            counts["swapped_follows_word"] += readings[1] == OPPOSITE_DIRECTIONS[direction]
            counts["swapped_follows_clip"] += readings[1] == direction
        rows[f"strength={strength}"] = {
            "start_sigma": round(float(v2v.scheduler.sigmas[start]), 4),
            **{name: hits / count for name, hits in counts.items()},
        }
    return {"count": count, "call": {"num_frames": frames, **kwargs}, "rows": rows}


def sensitivity_main(argv: list[str] | None = None) -> int:
    """``python benchmarks/prompt_sensitivity.py [--model DIR] [--out sensitivity.json]``."""
    import argparse
    import json

    from . import load_pipeline

    parser = argparse.ArgumentParser(description="How much the embedded transformer's prediction depends on each word.")
    parser.add_argument("--model", help="a WanPipeline folder to probe instead of the embedded model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--steering",
        metavar="S1,S2,...",
        help="also run direction_steering at these video-to-video strengths (e.g. 0.6,0.8,0.9,1.0)",
    )
    parser.add_argument("--steering-count", type=int, default=16, help="scenes per steering strength")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args(argv)
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    result = word_sensitivity(pipe, seed=args.seed)
    for where, row in result.items():
        print(f"{where}: " + ", ".join(f"{name} {value:.2%}" for name, value in row.items()))
    report = {"prompt": SENSITIVITY_PROMPT, "model": args.model or "embedded", "relative_l2": result}
    if args.steering:
        strengths = tuple(float(v) for v in args.steering.split(","))
        steering = direction_steering(pipe, strengths=strengths, count=args.steering_count, seed=args.seed)
        for where, row in steering["rows"].items():
            print(f"steering {where}: " + ", ".join(f"{name} {value:.2f}" for name, value in row.items()))
        report["direction_steering"] = steering
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return 0
