"""What a plan chose, for people: a summary table and a picture (layers x heads, colour = pattern kind).

The expected attention speedup of a layer is what the plan's own cost model predicts: the layer's heads
cost ``sum_h cost(head)`` against ``H`` for dense attention (see :mod:`dit_sparse.calibration.cost`); a
measured profile makes it a prediction for the device it was measured on, the analytic one a FLOP ratio.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from .heads import HeadPattern, head_table

if TYPE_CHECKING:
    from .plan import SparsityPlan

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


def head_costs(plan: SparsityPlan, bucket: int, layer: int, cache: dict | None = None) -> list[float]:
    """Each head's cost relative to dense attention under the plan's cost model."""
    cost = plan.cost_profile
    n = plan.layout.num_tokens
    costs = []
    for pattern in plan.buckets[bucket].layers[layer]:
        if pattern.kind == "skip":
            costs.append(cost.skip_cost(n))
        elif pattern.kind == "dense":
            costs.append(1.0)
        else:
            table = head_table(pattern, plan.layout, plan.block_size, cache)
            costs.append(cost.cost(float(table.float().mean())))
    return costs


def _kinds(patterns: list[HeadPattern]) -> str:
    counts = Counter(p.kind for p in patterns)
    return ", ".join(f"{kind} x{count}" for kind, count in sorted(counts.items(), key=lambda kc: (-kc[1], kc[0])))


def _steps(plan: SparsityPlan, bucket: int) -> str:
    b = plan.buckets[bucket]
    return f"{b.start}-end" if b.stop is None else f"{b.start}-{b.stop - 1}"


def _mean_density(patterns: list[HeadPattern]) -> float | None:
    known = [p.density for p in patterns if p.density is not None]
    return sum(known) / len(known) if known else None


def summary_table(plan: SparsityPlan) -> str:
    """A Markdown table: per bucket and layer, the patterns chosen, mean density and expected speedup.

    Each bucket ends with an ``all`` row over its layers (speedup of the whole bucket's self-attention).
    """
    lines = [
        f"cost model: {plan.cost_profile.kind}"
        + (
            f" ({plan.cost_profile.backend} on {plan.cost_profile.device})"
            if plan.cost_profile.kind == "measured"
            else ""
        ),
        "",
        "| steps | layer | patterns | mean density | expected attention speedup |",
        "|---|---|---|---|---|",
    ]
    cache: dict = {}
    for b, bucket in enumerate(plan.buckets):
        total_heads, total_cost, all_patterns = 0, 0.0, []
        for layer, patterns in enumerate(bucket.layers):
            costs = head_costs(plan, b, layer, cache)
            density = _mean_density(patterns)
            shown = "n/a" if density is None else f"{density:.3f}"
            lines.append(
                f"| {_steps(plan, b)} | {layer} | {_kinds(patterns)} | {shown} | {len(costs) / sum(costs):.2f}x |"
            )
            total_heads += len(costs)
            total_cost += sum(costs)
            all_patterns += patterns
        density = _mean_density(all_patterns)
        shown = "n/a" if density is None else f"{density:.3f}"
        lines.append(
            f"| {_steps(plan, b)} | all | {_kinds(all_patterns)} | {shown} | {total_heads / total_cost:.2f}x |"
        )
    return "\n".join(lines)


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
        draw.text((x0, y0), f"steps {_steps(plan, b)}", fill=INK)
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
