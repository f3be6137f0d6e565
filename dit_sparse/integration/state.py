"""Per-transformer sparse-attention state: the schedule (step, context), each call's decision, statistics."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from ..attention import block_sparse_attention
from ..config import SparseAttentionConfig
from ..layout import VideoLayout, invert_permutation
from ..mask import BlockSparseMask
from ..methods import AttentionCall, build_method
from .specs import ModelSpec

logger = logging.getLogger(__name__)


class _Timer:
    """Wall time of code sections without synchronizing a GPU on each call.

    On CUDA it records events and reads them only in :meth:`seconds` (one synchronize per summary).
    """

    def __init__(self) -> None:
        self.cpu_seconds = 0.0
        self.events: list[tuple[Any, Any]] = []

    @torch.compiler.disable
    def start(self, device: torch.device):
        if device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return ("cuda", event)
        return ("cpu", time.perf_counter())

    @torch.compiler.disable
    def stop(self, token) -> None:
        kind, start = token
        if kind == "cuda":
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events.append((start, end))
        else:
            self.cpu_seconds += time.perf_counter() - start

    def seconds(self) -> float:
        if self.events:
            torch.cuda.synchronize()
        return self.cpu_seconds + sum(s.elapsed_time(e) for s, e in self.events) / 1e3


class SparseState:
    """Everything dit-sparse keeps for one transformer it was applied to."""

    def __init__(self, spec: ModelSpec, config: SparseAttentionConfig, original_backends: list[Any]) -> None:
        self.spec = spec
        self.config = config
        self.method = build_method(config, spec)
        self._original_backends = original_backends
        self.layout: VideoLayout | None = None
        self.step = 0
        self.context: str | None = None
        self._last_timestep: float | None = None
        self.total_seconds: float | None = None
        # Callables (state, layer, q, k, v) told of every self-attention call, e.g. to capture inputs.
        self.observers: list[Callable[..., None]] = []
        self.begin_generation()

    # -- schedule ------------------------------------------------------------------------------------
    def original_backend(self, layer: int):
        return self._original_backends[layer]

    def begin_generation(self) -> None:
        """Reset the step counter and the statistics (a new pipeline call)."""
        self.step = 0
        self.transformer_timer = _Timer()
        self.attention_timer = _Timer()
        self.calls = 0
        self.layer_density_sum = [0.0] * len(self._original_backends)
        self.layer_calls = [0] * len(self._original_backends)
        self.total_seconds = None
        if self.method is not None:
            self.method.reset()

    def new_call(self) -> None:
        """The next forward starts a new generation (step 0, fresh statistics).

        The statistics of the finished call stay readable until then: pipelines reset stateful hooks at
        the end of a call, and ``summary()`` is read after it.
        """
        self._last_timestep = None

    @torch.compiler.disable
    def begin_forward(self, transformer: torch.nn.Module, args: tuple, kwargs: dict, cache_context) -> Any:
        """Read the call's layout and advance the step; returns a timing token for :meth:`end_forward`."""
        call = self.spec.bind(transformer, args, kwargs)
        context_step = getattr(cache_context, "step_index", None)
        self.context = getattr(cache_context, "name", None)
        if context_step is not None:  # the pipeline says which step this is (Wan)
            if self._last_timestep is None or context_step < self.step:
                self.begin_generation()
            self.step = context_step
            self._last_timestep = float("inf")  # "a call is under way", for new_call() to clear
        else:
            # Timesteps fall during denoising, so a rise means a new generation. The largest timestep of
            # the call counts: Wan 2.2 TI2V gives conditioning-frame tokens timestep 0. Reading it costs one
            # device sync per transformer call (not per attention call).
            timestep = call.get("timestep")
            t = float(timestep.max()) if isinstance(timestep, torch.Tensor) else timestep
            new_generation = self._last_timestep is None or (t is not None and t > self._last_timestep + 1e-6)
            if new_generation:
                self.begin_generation()
            elif t is not None and t < self._last_timestep - 1e-6:
                self.step += 1
            self._last_timestep = t
        self.layout = self.spec.read_layout(transformer, call)
        device = call["hidden_states"].device
        return self.transformer_timer.start(device)

    @torch.compiler.disable
    def end_forward(self, token) -> None:
        self.transformer_timer.stop(token)

    # -- one self-attention call -----------------------------------------------------------------------
    def attend(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        attn_mask: torch.Tensor | None,
        scale: float | None,
        dense_fn: Callable[[], torch.Tensor],
    ) -> torch.Tensor:
        """Attention of one layer; q, k, v and the result are ``(B, H, N, D)``."""
        layout = self.layout
        if layout is None:
            raise ValueError("dit-sparse saw an attention call before its transformer hook read the layout")
        if q.shape[2] != layout.num_tokens:
            raise ValueError(
                f"{self.spec.name} layer {layer}: self-attention over {q.shape[2]} tokens, but the call's "
                f"layout {layout} has {layout.num_tokens}"
            )
        for observer in self.observers:
            observer(self, layer, q, k, v)
        token = self.attention_timer.start(q.device)
        config = self.config
        if self.method is None or self.step < config.dense_steps or config.layer_is_dense(layer):
            out, density = dense_fn(), 1.0
        else:
            call = AttentionCall(layer, self.step, self.context, layout, q, k, v)
            plan = self.method.plan_for(call)
            mask = None if plan.dense else self._with_dense_heads(plan.mask, layer)
            if mask is None:
                out = dense_fn()
            elif plan.permutation is None:
                out = self._sparse(q, k, v, mask, attn_mask, scale)
            else:  # the mask is over a reordered sequence; text stays in place, so key padding does too
                perm = plan.permutation
                q, k, v = (_reorder(t, perm) for t in (q, k, v))
                out = _reorder(self._sparse(q, k, v, mask, attn_mask, scale), invert_permutation(perm))
            skip = [h for h in plan.skip_heads if h not in config.dense_heads.get(layer, ())]
            if mask is not None and skip:
                out = out.clone()
                out[:, skip] = _uniform_attention(v[:, skip], attn_mask).to(out.dtype)
            density = 1.0 if mask is None else self._density(mask)
        self.attention_timer.stop(token)
        self.calls += 1
        self.layer_density_sum[layer] += density
        self.layer_calls[layer] += 1
        return out

    @staticmethod
    def _density(mask: BlockSparseMask) -> float:
        if "density" not in mask._derived:
            mask._derived["density"] = mask.density()
        return mask._derived["density"]

    def _with_dense_heads(self, mask: BlockSparseMask, layer: int) -> BlockSparseMask:
        heads = self.config.dense_heads.get(layer)
        if not heads:
            return mask
        key = ("dense_heads", heads)
        if key not in mask._derived:
            if max(heads) >= mask.num_heads:
                raise ValueError(f"dense_heads[{layer}] names head {max(heads)}, the layer has {mask.num_heads}")
            blocks = mask.blocks.clone()
            blocks[:, list(heads)] = True
            mask._derived[key] = BlockSparseMask.from_dense(
                blocks, mask.block_size, mask.seq_len, allow_empty_rows=mask.allow_empty_rows
            )
        return mask._derived[key]

    def _sparse(self, q, k, v, mask: BlockSparseMask, attn_mask, scale) -> torch.Tensor:
        backend = self.config.backend
        if attn_mask is None:
            return block_sparse_attention(q, k, v, mask, backend=backend, scale=scale)
        # A key-padding mask whose kept keys are a prefix (HunyuanVideo pads its text at the end): attend
        # to that prefix only, per group of samples with the same length.
        lengths = _key_prefix_lengths(attn_mask, q.shape[0], k.shape[2])
        out = torch.empty_like(q)
        bk = mask.block_size[1]
        for length in sorted(set(lengths)):
            rows = [i for i, n in enumerate(lengths) if n == length]
            blocks = mask.blocks[..., : math.ceil(length / bk)]
            if blocks.shape[0] > 1:
                blocks = blocks[rows]
            sub = BlockSparseMask.from_dense(
                blocks, mask.block_size, (q.shape[2], length), allow_empty_rows=mask.allow_empty_rows
            )
            out[rows] = block_sparse_attention(
                q[rows], k[rows, :, :length], v[rows, :, :length], sub, backend=backend, scale=scale
            )
        return out

    # -- report -----------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        per_layer = [s / n if n else None for s, n in zip(self.layer_density_sum, self.layer_calls, strict=True)]
        counted = [d for d in per_layer if d is not None]
        return {
            "model": self.spec.name,
            "method": self.config.method,
            "total_seconds": self.total_seconds,
            "transformer_seconds": self.transformer_timer.seconds(),
            "attention_seconds": self.attention_timer.seconds(),
            "mean_density": sum(self.layer_density_sum) / self.calls if self.calls else None,
            "searches": self.method.searches if self.method is not None else 0,
            "reuses": self.method.reuses if self.method is not None else 0,
            "per_layer": per_layer,
            "attention_calls": self.calls,
            "steps": self.step + 1 if self.calls else 0,
            "layout": None if self.layout is None else vars(self.layout).copy(),
            "mean_layer_density": sum(counted) / len(counted) if counted else None,
        }


def _uniform_attention(v: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
    """Output of attention spread evenly over the (valid) keys: the mean of V, ``(B, h, 1, D)`` broadcast to N rows."""
    if attn_mask is None:
        return v.float().mean(dim=2, keepdim=True)
    lengths = torch.tensor(_key_prefix_lengths(attn_mask, v.shape[0], v.shape[2]), device=v.device)
    valid = torch.arange(v.shape[2], device=v.device)[None, :] < lengths[:, None]  # (B, Nk)
    sums = (v.float() * valid[:, None, :, None]).sum(dim=2, keepdim=True)
    return sums / lengths[:, None, None, None]


def _reorder(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``x[:, :, perm]`` for a ``(N,)`` permutation, or per head for an ``(H, N)`` one; x is ``(B, H, N, D)``."""
    if perm.dim() == 1:
        return x[:, :, perm]
    index = perm[None, :, :, None].expand(x.shape[0], -1, -1, x.shape[-1])  # (B, H, N, D)
    return torch.gather(x, 2, index)


def _key_prefix_lengths(attn_mask: torch.Tensor, batch: int, n_keys: int) -> list[int]:
    """Per sample, how many leading keys a boolean key-padding mask keeps; ValueError for other masks."""
    if attn_mask.dtype != torch.bool:
        raise ValueError(f"dit-sparse takes boolean key-padding masks only, got an attention mask of {attn_mask.dtype}")
    keys = attn_mask.reshape(attn_mask.shape[0], -1, attn_mask.shape[-1])
    if attn_mask.shape[-1] != n_keys or keys.shape[0] not in (1, batch) or not bool((keys == keys[:, :1]).all()):
        raise ValueError(
            f"dit-sparse takes key-padding masks of shape (B, 1, 1, {n_keys}); got {tuple(attn_mask.shape)}"
        )
    keys = keys[:, 0].expand(batch, n_keys)  # (B, Nk)
    lengths = keys.sum(dim=-1)
    prefix = torch.arange(n_keys, device=keys.device)[None, :] < lengths[:, None]
    if not torch.equal(prefix, keys):
        raise ValueError("dit-sparse takes key-padding masks whose kept keys come first (padding at the end)")
    return [int(n) for n in lengths.tolist()]
