"""What a plan chose, as a picture: layers x heads per step bucket, colour = pattern kind, label = density.

The plan's text summary (patterns, mean density and expected speedup per layer) is
:func:`dit_sparse.plan.summary_table`, ``plan.summary_table()``.
"""

from __future__ import annotations

import os

from PIL import Image, ImageDraw

from ..plan import SparsityPlan

KIND_COLOURS = {
    "dense": (70, 70, 70),
    "skip": (235, 235, 235),
    "diagonal": (40, 100, 200),
    "multi_diagonal": (40, 160, 80),
    "vertical_stripe": (235, 140, 30),
    "radial": (140, 70, 180),
    "tile": (20, 160, 170),
    "mask": (200, 50, 50),
}
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def _colour(kind: str) -> tuple[int, int, int]:
    parts = [KIND_COLOURS[p] for p in kind.split("+")]
    return tuple(sum(c[i] for c in parts) // len(parts) for i in range(3))


def _ink_on(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    return INK if luminance > 140 else (255, 255, 255)


def render_plan(plan: SparsityPlan, path: str | os.PathLike | None = None, *, cell: tuple[int, int] = (40, 18)):
    """Picture of ``plan``: per step bucket a grid of layers (rows) x heads (columns), coloured by pattern kind
    (unions mix their parts' colours) and labelled with each head's density, with a legend below.

    Args:
        plan (`SparsityPlan`): the plan to draw.
        path (`str`, optional): write a PNG there.
        cell (`(int, int)`, defaults to ``(40, 18)``): pixels per head cell (width, height).

    Returns:
        The ``PIL.Image``.
    """
    cell_w, cell_h = cell
    pad, title_h, label_w = 10, 18, 28
    max_heads = max(plan.heads_per_layer)
    panel_w = label_w + max_heads * cell_w
    panel_h = title_h + plan.num_layers * cell_h
    kinds = sorted({p.kind for bucket in plan.buckets for heads in bucket.layers for p in heads})
    legend_h = 16 * len(kinds) + pad
    width = pad + len(plan.buckets) * (panel_w + pad)
    canvas = Image.new("RGB", (max(width, 220), pad + panel_h + pad + legend_h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for b, bucket in enumerate(plan.buckets):
        x0, y0 = pad + b * (panel_w + pad), pad
        draw.text((x0, y0), f"steps {bucket.label}", fill=INK)
        for layer, heads in enumerate(bucket.layers):
            y = y0 + title_h + layer * cell_h
            draw.text((x0, y + 3), f"L{layer}", fill=INK)
            for head, pattern in enumerate(heads):
                x = x0 + label_w + head * cell_w
                colour = _colour(pattern.kind)
                draw.rectangle((x, y, x + cell_w - 2, y + cell_h - 2), fill=colour, outline=(200, 200, 200))
                label = "-" if pattern.density is None else f"{pattern.density:.2f}"
                draw.text((x + 3, y + 3), label, fill=_ink_on(colour))
    y = pad + panel_h + pad
    for index, kind in enumerate(kinds):
        colour = _colour(kind)
        draw.rectangle((pad, y + 16 * index, pad + 12, y + 16 * index + 12), fill=colour, outline=(160, 160, 160))
        draw.text((pad + 18, y + 16 * index), kind, fill=INK)
    if path is not None:
        canvas.save(os.fspath(path), format="PNG")
    return canvas
