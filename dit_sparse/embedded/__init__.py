"""The embedded default model: a tiny Wan 2.1-architecture text-to-video pipeline trained by this project.

It ships in the repository's ``assets/`` folder (installed as the package data ``dit_sparse.assets``), so
``dit-sparse generate`` works on a fresh machine with no weights and no network. It was trained from scratch
on procedural videos of coloured circles and squares moving left, right, up or down over plain backgrounds
(``dit_sparse.embedded.scenes``) by ``python -m dit_sparse.embedded.train`` (its model card,
``assets/wan-tiny-t2v/README.md``, gives the command, time, machine and measured adherence). Its
attention has the spatial and temporal structure of a real video DiT, at 2,304 video tokens per
self-attention call at the defaults, so sparse methods have something to find.

Example:
    >>> import dit_sparse as ds
    >>> pipe = ds.embedded.load_pipeline()
    >>> video = pipe("a red circle moving right on a dark background", **ds.embedded.GENERATION_DEFAULTS).frames[0]
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import torch

MODEL_NAME = "wan-tiny-t2v"

# The model's native call arguments: 17 frames of 128 x 128 -> latents 9 x 32 x 32 -> 9 x 16 x 16 = 2,304
# video tokens per self-attention call.
GENERATION_DEFAULTS: dict[str, int | float] = {
    "height": 128,
    "width": 128,
    "num_frames": 17,
    "num_inference_steps": 20,
    "guidance_scale": 5.0,
}

# What ``dit-sparse generate`` runs when given no --model (the README's first command). The native size, steps
# and guidance with 49 frames instead of 17: 25 latent frames, 6,400 video tokens per self-attention call,
# where self-attention is ~78% of the transformer's time (~54% at 17 frames), which is the regime sparse
# attention is for. The model was trained on 17 frames: at 49 its first frame or two come out with a
# background colour of their own before the usual objects on a plain background (measured and shown in
# benchmarks/results/2026-12-01-frontier-embedded-49f.md).
DEMO_DEFAULTS: dict[str, int | float] = {**GENERATION_DEFAULTS, "num_frames": 49}

# The sparse attention of that run, chosen from the measured frontier of every method at those settings
# (`dit-sparse sweep --frames 49 --block-size 256`, benchmarks/results/2026-12-01-frontier-embedded-49f.md):
# SparseD's schedule, dense for the first 4 of 20 steps, then the top 20% of blocks by attention mass, found once
# per layer and reused; the mass is measured on every 4th query row (row_stride, ours: 27.13 dB against 27.07
# with every row, at a quarter of the search's cost), and the cond and uncond passes share one mask
# (share_contexts, ours: 27.82 dB against 27.13, half the searches; benchmarks/results/
# 2026-12-02-frontier-embedded-49f-share-contexts.json). Blocks of 256 tokens (one latent frame here) run ~80% as
# fast per block as dense SDPA on a CPU (~70% at 128).
DEMO_SPARSE_ATTENTION: dict[str, object] = {
    "method": "sparsed",
    "fraction": 0.2,
    "dense_steps": 4,
    "block_size": 256,
    "row_stride": 4,
    "share_contexts": True,
}


def model_path() -> Path:
    """The folder of the embedded pipeline: installed package data, else the source tree's ``assets/``."""
    try:
        installed = Path(str(importlib.resources.files("dit_sparse.assets") / MODEL_NAME))
    except ModuleNotFoundError:
        installed = None
    if installed is not None and (installed / "model_index.json").is_file():
        return installed
    source = Path(__file__).resolve().parents[2] / "assets" / MODEL_NAME
    if (source / "model_index.json").is_file():
        return source
    raise FileNotFoundError(
        f"the embedded model {MODEL_NAME!r} is not installed (looked in the package data dit_sparse.assets and in "
        f"{source}); reinstall dit-sparse, or rebuild it with `python -m dit_sparse.embedded.train --out {source}`"
    )


def load_pipeline(
    path: str | Path | None = None, *, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32
):
    """The embedded ``diffusers.WanPipeline``, loaded from local files only (no network).

    Args:
        path (`str` or `Path`, *optional*): another folder of the same kind (e.g. a model just trained by
            ``python -m dit_sparse.embedded.train``) to load instead; default: the installed embedded model.
        device (`str` or `torch.device`, *optional*): where to move the pipeline; default: leave it on the CPU.
        dtype (`torch.dtype`, defaults to ``torch.float32``): weights' dtype (the model was trained in fp32).
    """
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(str(path or model_path()), dtype=dtype, local_files_only=True)
    return pipe.to(device) if device is not None else pipe
