"""Render block masks as PNG pictures: one head's block map, or a grid of all heads of a layer."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image, ImageDraw

from .mask import BlockSparseMask

KEPT = (32, 96, 200)
DROPPED = (245, 245, 245)
BACKGROUND = (255, 255, 255)
LABEL = (20, 20, 20)


def _head_image(blocks: torch.Tensor, cell: int) -> Image.Image:
    kept = blocks.cpu().numpy().astype(bool)  # (nQ, nK)
    rgb = np.where(kept[..., None], np.array(KEPT, np.uint8), np.array(DROPPED, np.uint8))
    image = Image.fromarray(rgb.astype(np.uint8), "RGB")
    return image.resize((kept.shape[1] * cell, kept.shape[0] * cell), Image.NEAREST)


def render_mask(
    mask: BlockSparseMask,
    path: str | os.PathLike | None = None,
    *,
    heads: list[int] | None = None,
    batch: int = 0,
    size: int = 384,
) -> Image.Image:
    """Picture of ``mask``: each head's block map (rows: q blocks, columns: kv blocks), labelled with its density.

    Args:
        mask (`BlockSparseMask`): the mask to draw.
        path (`str`, optional): write a PNG there.
        heads (`list[int]`, optional): which heads (default all, in a grid).
        batch (`int`, defaults to 0): which batch entry of a per-sample mask.
        size (`int`, defaults to 384): about how many pixels a head's map spans.

    Returns:
        The ``PIL.Image``.
    """
    heads = list(range(mask.num_heads)) if heads is None else heads
    bad = [h for h in heads if not 0 <= h < mask.num_heads]
    if bad or not heads:
        raise ValueError(f"heads must be a non-empty list in [0, {mask.num_heads}), got {heads}")
    if not 0 <= batch < mask.batch:
        raise ValueError(f"batch must be in [0, {mask.batch}), got {batch}")
    n_q, n_k = mask.num_blocks
    cell = max(1, size // max(n_q, n_k))
    densities = mask.density_per_head()[batch]
    columns = math.ceil(math.sqrt(len(heads)))
    rows = math.ceil(len(heads) / columns)
    pad, label_height = 8, 16
    tile_w, tile_h = n_k * cell + pad, n_q * cell + pad + label_height
    canvas = Image.new("RGB", (columns * tile_w + pad, rows * tile_h + pad), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for index, head in enumerate(heads):
        x = pad + (index % columns) * tile_w
        y = pad + (index // columns) * tile_h
        draw.text((x, y), f"head {head}: density {float(densities[head]):.3f}", fill=LABEL)
        canvas.paste(_head_image(mask.blocks[batch, head], cell), (x, y + label_height))
    if path is not None:
        canvas.save(os.fspath(path), format="PNG")
    return canvas
