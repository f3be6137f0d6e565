"""Capture the inputs of self-attention calls (for calibration, pattern studies and debugging)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..config import SparseAttentionConfig
from ..methods.base import AttentionCall
from .apply import _transformers, apply_sparse_attention, remove_sparse_attention, sparse_state


@dataclass(frozen=True)
class CapturedAttention(AttentionCall):
    """One recorded self-attention call (``q, k, v`` are ``(B, H, N, D)``) and which transformer made it."""

    transformer: str = "transformer"


@contextlib.contextmanager
def capture_attention_inputs(
    target: Any,
    *,
    layers: set[int] | list[int] | None = None,
    steps: set[int] | list[int] | None = None,
    device: torch.device | str = "cpu",
) -> Iterator[list[CapturedAttention]]:
    """Record q, k, v of the self-attention calls made inside the ``with`` block.

    Where dit-sparse is not applied yet, the model runs with the ``dense`` method (its output unchanged)
    and is restored afterwards; where it is, the current configuration keeps running.

    Example:
        >>> with capture_attention_inputs(pipe, layers=[0], steps=[0]) as calls:  # doctest: +SKIP
        ...     pipe("a red circle moving right", num_inference_steps=2)
        >>> calls[0].q.shape  # doctest: +SKIP
    """
    layer_set = None if layers is None else set(layers)
    step_set = None if steps is None else set(steps)
    records: list[CapturedAttention] = []
    applied_here: list[torch.nn.Module] = []
    hooked = []
    for name, module in _transformers(target):
        if sparse_state(module) is None:
            apply_sparse_attention(module, SparseAttentionConfig("dense"))
            applied_here.append(module)
        state = sparse_state(module)

        def observe(state, layer, q, k, v, name=name):
            if (layer_set is None or layer in layer_set) and (step_set is None or state.step in step_set):
                records.append(
                    CapturedAttention(
                        layer=layer,
                        step=state.step,
                        context=state.context,
                        layout=state.layout,
                        q=q.detach().to(device),
                        k=k.detach().to(device),
                        v=v.detach().to(device),
                        transformer=name,
                    )
                )

        state.observers.append(observe)
        hooked.append((state, observe))
    try:
        yield records
    finally:
        for state, observe in hooked:
            state.observers.remove(observe)
        for module in applied_here:
            remove_sparse_attention(module)
