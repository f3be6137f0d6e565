"""Per-transformer sparse-attention state: the schedule (step, context), each call's decision, statistics."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ..attention import block_sparse_attention, pyramid_attention
from ..config import SparseAttentionConfig
from ..kernels.pyramid import PYRAMID_BACKENDS
from ..layout import VideoLayout, invert_permutation
from ..levels import LevelMask
from ..mask import BlockSparseMask
from ..methods import AttentionCall, AttentionPlan, build_method
from .cross import can_merge, merged_cross_attention, repeated_tail_start
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
        self.layout: VideoLayout | None = None  # the current call's (per_sample_text: fitted to the call)
        self.forward_layout: VideoLayout | None = None  # read from the transformer's forward arguments
        self._sample_calls = [0] * len(original_backends)  # per layer, attention calls in this forward
        self.forward_entries = self.forward_attends = 0  # self-attention module forwards / attend calls
        self._warned_bypass = False
        self.attn_mask: torch.Tensor | None = None  # the current attention call's padding mask
        self._padding: tuple[list[int], list[int] | None] | None = None  # its lengths, once read
        self.step = 0
        self.context: str | None = None
        self._last_timestep: float | None = None
        self._last_mean: float | None = None
        self.total_seconds: float | None = None
        # Callables (state, layer, q, k, v) told of every self-attention call, e.g. to capture inputs.
        self.observers: list[Callable[..., None]] = []
        # Cross-attention modules whose padding keys are merged, and their processors before dit-sparse's copies.
        self.cross_layers: list[torch.nn.Module] = []
        self.original_cross_processors: list[Any] = []
        self.begin_generation()

    # -- schedule ------------------------------------------------------------------------------------
    def original_backend(self, layer: int):
        return self._original_backends[layer]

    def set_original_backend(self, layer: int, backend) -> None:
        """The backend ``layer`` runs without dit-sparse (the ``global`` bridge reads it at each forward)."""
        self._original_backends[layer] = backend

    def begin_generation(self) -> None:
        """Reset the step counter and the statistics (a new pipeline call)."""
        self.step = 0
        self._step_contexts: set[str] = set()  # cache contexts seen in this step (pipelines without step_index)
        self.transformer_timer = _Timer()
        self.attention_timer = _Timer()
        # Inside attention_timer: the attention kernels alone (block-sparse or dense); what is left after them
        # and the searches below is dit-sparse's own work (mask lookups, permutations, head slicing).
        self.kernel_timer = _Timer()
        # Also inside attention_timer: method calls that searched or built a mask (scoring passes such as
        # AdaSpa's block mass, pattern construction); lookups of a cached mask are not counted here.
        self.search_timer = _Timer()
        self.hook_seconds = 0.0  # the transformer hook's own work per forward (binding, layout, step)
        self.calls = 0
        self.full_mask_calls = 0
        self.cross_calls = 0  # cross-attention calls seen by attend_cross
        self.merged_cross_calls = 0  # of those, calls whose repeated padding keys were merged
        self.merged_keys = 0  # keys those merges left out, summed over the calls
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
        started = time.perf_counter()
        call = self.spec.bind(transformer, args, kwargs)
        context_parallel = check_parallelism(transformer, self.spec)
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
            # A cache context seen again within a step: SkyReels-V2 diffusion forcing starts frames one after
            # another (per-frame timesteps), so its largest timestep stays put for several steps while the
            # mean falls: a new step. Seen again with nothing fallen, it is the same step run anew: a new
            # generation (e.g. after a generation interrupted in its first step).
            timestep = call.get("timestep")
            t = float(timestep.max()) if isinstance(timestep, torch.Tensor) else timestep
            mean = float(timestep.float().mean()) if isinstance(timestep, torch.Tensor) else timestep
            repeated = self.context is not None and self.context in self._step_contexts
            new_generation = self._last_timestep is None or (t is not None and t > self._last_timestep + 1e-6)
            if repeated and not new_generation and t is not None:
                mean_fell = self._last_mean is not None and mean < self._last_mean - 1e-6
                new_generation = not mean_fell and t >= self._last_timestep - 1e-6
            if new_generation:
                self.begin_generation()
            elif (t is not None and t < self._last_timestep - 1e-6) or repeated:
                self.step += 1
                self._step_contexts = set()
            if self.context is not None:
                self._step_contexts.add(self.context)
            self._last_timestep, self._last_mean = t, mean
        self.layout = self.forward_layout = self.spec.read_layout(transformer, call)
        self._sample_calls = [0] * len(self._original_backends)
        self.forward_entries = self.forward_attends = 0
        check_token_split(context_parallel, self.spec.name, self.layout)
        device = call["hidden_states"].device
        token = self.transformer_timer.start(device)
        self.hook_seconds += time.perf_counter() - started
        return token

    @torch.compiler.disable
    def end_forward(self, token) -> None:
        self.transformer_timer.stop(token)
        if self.forward_entries and not self.forward_attends and not self._warned_bypass:
            # The self-attention modules ran but none of their attention reached dit-sparse, e.g. after
            # set_attention_backend() replaced dit-sparse's backend on their processors.
            self._warned_bypass = True
            warnings.warn(
                f"dit-sparse: {self.spec.name}'s self-attention ran {self.forward_entries} times in a forward "
                "without reaching dit-sparse, so it ran dense (diffusers' active attention backend: "
                f"{_active_backend_name()}); if the attention backend was set after apply_sparse_attention, "
                "apply it again",
                RuntimeWarning,
                stacklevel=2,
            )

    def enter_module(self) -> None:
        """A self-attention module of this transformer starts its forward (counted against :meth:`attend`)."""
        self.forward_entries += 1

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
        head_offset: int = 0,
        total_heads: int | None = None,
    ) -> torch.Tensor:
        """Attention of one layer; q, k, v and the result are ``(B, h, N, D)``.

        Args:
            layer (`int`): index of the self-attention layer.
            q, k, v (`torch.Tensor`): ``(B, h, N, D)``, the whole sequence.
            attn_mask (`torch.Tensor`, optional): boolean padding mask, kept tokens first (see `padding_lengths`).
            scale (`float`, optional): softmax scale; default ``1 / sqrt(D)``.
            dense_fn (`Callable`): exact attention of these q, k, v, for dense steps, layers and plans.
            head_offset (`int`, defaults to 0): model head number of q's first head (Ulysses: this rank's slice).
            total_heads (`int`, optional): the layer's head count when q holds a slice of them; default ``h``.
        """
        total = q.shape[1] if total_heads is None else total_heads
        if not 0 <= head_offset <= total - q.shape[1]:
            raise ValueError(
                f"layer {layer}: heads [{head_offset}, {head_offset + q.shape[1]}) are not a slice of the "
                f"layer's {total} heads"
            )
        self.forward_attends += 1
        layout, context = self._call_layout(layer, q.shape[2])
        self.attn_mask, self._padding = attn_mask, None  # the call's padding mask; its lengths, read on demand
        for observer in self.observers:
            observer(self, layer, q, k, v)
        token = self.attention_timer.start(q.device)
        config = self.config
        if self.method is None or self.step < config.dense_steps or config.layer_is_dense(layer):
            out, density = self._timed_kernel(dense_fn, q.device), 1.0
        else:
            call = AttentionCall(layer, self.step, context, layout, q, k, v, total, head_offset)
            searches, search = self.method.searches, self.search_timer.start(q.device)
            plan = _local_plan(self.method.plan_for(call), call, layer)
            if self.method.searches != searches:
                self.search_timer.stop(search)
            mask = None if plan.dense else self._with_dense_heads(plan.mask, layer, head_offset, total)
            mask = self._with_pooled_rest(mask)
            if mask is None or (config.backend == "auto" and mask.is_full()):
                # A mask that keeps every block is dense attention: the model's own dense path computes it
                # exactly and at dense speed (in any token order, so a permutation can be left out). A
                # named backend still runs itself, as block_sparse_attention does.
                out = self._timed_kernel(dense_fn, q.device)
                self.full_mask_calls += mask is not None
            elif plan.permutation is None:
                out = self._timed_kernel(lambda: self._sparse(q, k, v, mask, scale), q.device)
            else:  # the mask is over a reordered sequence; text stays in place, so key padding does too
                perm = plan.permutation
                q, k, v = (_reorder(t, perm) for t in (q, k, v))
                out = self._timed_kernel(lambda: self._sparse(q, k, v, mask, scale), q.device)
                out = _reorder(out, invert_permutation(perm))
            skip = [h for h in plan.skip_heads if h + head_offset not in config.dense_heads.get(layer, ())]
            if mask is not None and skip:
                out = out.clone()
                out[:, skip] = _uniform_attention(v[:, skip], self.padding(v.shape[0], v.shape[2])).to(out.dtype)
            density = 1.0 if mask is None else self._density(mask)
        self.attention_timer.stop(token)
        self.calls += 1
        self.layer_density_sum[layer] += density
        self.layer_calls[layer] += 1
        return out

    def padding(self, batch: int, n_keys: int) -> tuple[list[int], list[int] | None] | None:
        """The current call's padding mask as per-sample (key lengths, query lengths or None), read from the
        mask once per call (the check is O(N^2)); None when the call has no mask."""
        if self.attn_mask is None:
            return None
        if self._padding is None:
            self._padding = padding_lengths(self.attn_mask, batch, n_keys)
        return self._padding

    def _call_layout(self, layer: int, n_tokens: int) -> tuple[VideoLayout, str | None]:
        """The layout and cache context of one attention call over ``n_tokens`` tokens.

        With the spec's ``per_sample_text`` (Mochi) the layer's i-th call in a forward is sample i over the
        video and that sample's unpadded text: its layout is the forward's with the suffix text cut to the
        call's length (kept in ``self.layout`` for observers), and ``#sample<i>`` is added to its context so
        that masks searched on one sample are not reused for another.
        """
        per_sample = self.spec.per_sample_text
        layout = self.forward_layout if per_sample else self.layout  # per sample, self.layout is the last call's
        if layout is None:
            raise ValueError("dit-sparse saw an attention call before its transformer hook read the layout")
        context = self.context
        if per_sample:
            context = f"{context}#sample{self._sample_calls[layer]}"
            self._sample_calls[layer] += 1
            text_len = n_tokens - layout.video_tokens
            if layout.text_position == "suffix" and 0 <= text_len <= layout.text_len:
                layout = self.layout = dataclasses.replace(layout, text_len=text_len)
        if n_tokens != layout.num_tokens:
            raise ValueError(
                f"{self.spec.name} layer {layer}: self-attention over {n_tokens} tokens, but the call's "
                f"layout {layout} has {layout.num_tokens}"
            )
        return layout, context

    def _timed_kernel(self, fn: Callable[[], torch.Tensor], device: torch.device) -> torch.Tensor:
        token = self.kernel_timer.start(device)
        out = fn()
        self.kernel_timer.stop(token)
        return out

    @staticmethod
    def _density(mask: BlockSparseMask | LevelMask) -> float:
        """Fraction of dense attention's work (a level mask: its compute density, pooled blocks at their share)."""
        if "density" not in mask._derived:
            mask._derived["density"] = mask.density()
        return mask._derived["density"]

    def _with_dense_heads(
        self, mask: BlockSparseMask | None, layer: int, head_offset: int, total_heads: int
    ) -> BlockSparseMask | None:
        """``mask`` with the config's ``dense_heads`` (model head numbers) of this call's heads made dense."""
        heads = self.config.dense_heads.get(layer)
        if not heads or mask is None:
            return mask
        if max(heads) >= total_heads:
            raise ValueError(f"dense_heads[{layer}] names head {max(heads)}, the layer has {total_heads}")
        local = tuple(h - head_offset for h in heads if head_offset <= h < head_offset + mask.num_heads)
        if not local:
            return mask
        key = ("dense_heads", local)
        if key not in mask._derived:
            table = _table(mask).clone()
            table[:, list(local)] = 0 if isinstance(mask, LevelMask) else True  # full blocks
            mask._derived[key] = _same_kind(mask, table)
        return mask._derived[key]

    def _with_pooled_rest(self, mask: BlockSparseMask | LevelMask | None) -> BlockSparseMask | LevelMask | None:
        """With the config's ``levels``, a binary mask whose dropped blocks are read pooled (cached on the mask);
        a full mask stays binary (it runs dense)."""
        level = self.config.levels
        if level is None or not isinstance(mask, BlockSparseMask) or mask.is_full():
            return mask
        key = ("pooled_rest", level)
        if key not in mask._derived:
            mask._derived[key] = LevelMask.from_block_mask(mask, rest=level)
        return mask._derived[key]

    def _sparse(self, q, k, v, mask: BlockSparseMask | LevelMask, scale) -> torch.Tensor:
        backend, quant = self.config.backend, self.config.quant
        if isinstance(mask, LevelMask):
            backend = backend if backend in PYRAMID_BACKENDS else "auto"  # e.g. gather, or auto for flex

            def attend(q, k, v, mask):
                return pyramid_attention(q, k, v, mask, scale=scale, backend=backend)
        else:

            def attend(q, k, v, mask):
                return block_sparse_attention(q, k, v, mask, backend=backend, scale=scale, quant=quant)

        padding = self.padding(q.shape[0], k.shape[2])
        if padding is None:
            return attend(q, k, v, mask)
        # A padding mask whose kept keys are a prefix (HunyuanVideo pads its text at the end): attend to
        # that prefix only, per group of samples with the same length. Where padded queries are masked too
        # (HunyuanVideo 1.5) their rows are zeros, as dense SDPA gives them.
        lengths, query_lengths = padding
        out = torch.empty_like(q)
        bk = mask.block_size[1]
        for length in sorted(set(lengths)):
            rows = [i for i, n in enumerate(lengths) if n == length]
            table = _table(mask)[..., : math.ceil(length / bk)]
            if table.shape[0] > 1:
                table = table[rows]
            sub = _same_kind(mask, table, (q.shape[2], length))
            out[rows] = attend(q[rows], k[rows, :, :length], v[rows, :, :length], sub)
        for i, length in enumerate(query_lengths or ()):
            out[i, :, length:] = 0
        return out

    @torch.compiler.disable
    def attend_cross(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None,
        dropout_p: float,
        is_causal: bool,
        scale: float | None,
        dense_fn: Callable[[], torch.Tensor],
    ) -> torch.Tensor:
        """One cross-attention call, ``(B, N, H, D)`` in and out as diffusers passes them: the keys' trailing run
        of identical rows (zero-padded text) merged into one key (exact, see :mod:`dit_sparse.integration.cross`),
        else ``dense_fn``."""
        self.cross_calls += 1
        if not can_merge(query, attn_mask, dropout_p, is_causal):
            return dense_fn()
        start = repeated_tail_start(key, value)
        if start is None:
            return dense_fn()
        self.merged_cross_calls += 1
        self.merged_keys += key.shape[1] - start - 1
        return merged_cross_attention(query, key, value, start, scale)

    # -- report -----------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        per_layer = [s / n if n else None for s, n in zip(self.layer_density_sum, self.layer_calls, strict=True)]
        counted = [d for d in per_layer if d is not None]
        attention_seconds = self.attention_timer.seconds()
        search_seconds = self.search_timer.seconds()
        overhead = max(0.0, attention_seconds - self.kernel_timer.seconds() - search_seconds) + self.hook_seconds
        return {
            "model": self.spec.name,
            "method": self.config.method,
            "total_seconds": self.total_seconds,
            "transformer_seconds": self.transformer_timer.seconds(),
            "attention_seconds": attention_seconds,
            "search_seconds": search_seconds,
            "overhead_seconds": overhead,
            "overhead_fraction": overhead / attention_seconds if attention_seconds else None,
            "full_mask_calls": self.full_mask_calls,
            "mean_density": sum(self.layer_density_sum) / self.calls if self.calls else None,
            "searches": self.method.searches if self.method is not None else 0,
            "reuses": self.method.reuses if self.method is not None else 0,
            "per_layer": per_layer,
            "attention_calls": self.calls,
            "steps": self.step + 1 if self.calls else 0,
            "layout": None if self.layout is None else vars(self.layout).copy(),
            "mean_layer_density": sum(counted) / len(counted) if counted else None,
            "cross_attention_calls": self.cross_calls,
            "merged_cross_calls": self.merged_cross_calls,
            "merged_keys_per_call": self.merged_keys / self.merged_cross_calls if self.merged_cross_calls else None,
        }


def check_parallelism(transformer: torch.nn.Module, spec: ModelSpec) -> Any:
    """The transformer's context-parallel config (or ``None``), after refusing what dit-sparse cannot run.

    Only Ulysses context parallelism keeps what a sparse mask needs: every rank attends over the whole
    sequence, in the model's token order, for a slice of the heads it can name (its rank tells which).
    Called before the layout is read: a split of the transformer's inputs may already have cut them.

    Args:
        transformer (`torch.nn.Module`): the transformer; ``enable_parallelism`` records its config on it.
        spec (`ModelSpec`): the model's spec.
    """
    parallel = getattr(transformer, "_parallel_config", None)
    if parallel is None:
        return None
    if getattr(parallel, "tensor_parallel_config", None) is not None:
        raise ValueError(
            f"{spec.name}: dit-sparse does not support diffusers tensor parallelism (each rank attends over a slice "
            "of the heads that its attention call cannot identify); use context parallelism instead: "
            "ContextParallelConfig(ulysses_degree=N)"
        )
    cp = getattr(parallel, "context_parallel_config", None)
    if cp is None:
        return None
    if cp.ring_degree > 1:
        raise ValueError(
            f"{spec.name}: dit-sparse supports Ulysses context parallelism only, got ring_degree={cp.ring_degree}. "
            "Ring attention hands each rank a chunk of the keys at a time, while sparse masks and their searches "
            "need the whole sequence in one call; use ContextParallelConfig(ulysses_degree=N) with ring_degree=1"
        )
    if not spec.context_parallel:
        # Flux's plan splits text and image separately and each rank concatenates its own chunks, so the
        # gathered sequence is [text_0, image_0, text_1, image_1, ...], not the layout's order.
        raise ValueError(
            f"{spec.name}: dit-sparse supports context parallelism for video-only self-attention (Wan); split "
            "over ranks, this model's joint text and video sequence reaches attention in another order"
        )
    return cp


def check_token_split(cp: Any, model: str, layout: VideoLayout) -> None:
    """Refuse a token count that diffusers' Ulysses split cannot cut evenly (``cp``: a context-parallel config).

    Args:
        cp (`ContextParallelConfig`, optional): from :func:`check_parallelism`; ``None`` checks nothing.
        model (`str`): the model's name, for messages.
        layout (`VideoLayout`): the token grid of the call.
    """
    if cp is None or cp.ulysses_anything or layout.num_tokens % cp.ulysses_degree == 0:
        return
    raise ValueError(
        f"{model}: {layout.num_tokens} tokens ({layout.frames} x {layout.height} x {layout.width} after "
        f"patchify) do not split evenly over ulysses_degree={cp.ulysses_degree} ranks; choose frames, height "
        f"and width whose token count is a multiple of {cp.ulysses_degree}"
    )


def _table(mask: BlockSparseMask | LevelMask) -> torch.Tensor:
    """The per-block table of either mask kind: kept blocks (bool) or levels (int8)."""
    return mask.levels if isinstance(mask, LevelMask) else mask.blocks


def _same_kind(
    mask: BlockSparseMask | LevelMask, table: torch.Tensor, seq_len: tuple[int, int] | None = None
) -> BlockSparseMask | LevelMask:
    """A mask of ``mask``'s kind and settings over another table (a head slice, dense heads, a key prefix)."""
    seq_len = mask.seq_len if seq_len is None else seq_len
    if isinstance(mask, LevelMask):
        return LevelMask(table, mask.block_size, seq_len, max_level=mask.max_level,
                         allow_empty_rows=mask.allow_empty_rows, name=mask.name)  # fmt: skip
    return BlockSparseMask.from_dense(table, mask.block_size, seq_len, allow_empty_rows=mask.allow_empty_rows,
                                      name=mask.name)  # fmt: skip


def _local_plan(plan: AttentionPlan, call: AttentionCall, layer: int) -> AttentionPlan:
    """The part of ``plan`` for the heads in ``call.q``.

    Under Ulysses a rank holds heads ``[call.head_offset, call.head_offset + h)``. Plans built from per-head
    data cover all the layer's heads and are sliced here (the slice of a mask is cached on it, so a static
    mask is sliced once); plans computed from q and k already cover the local heads and pass through.
    """
    local, total = call.q.shape[1], call.num_heads
    if plan.dense or plan.mask is None or local == total:  # without a mask the call runs dense
        return plan
    planned = plan.mask.num_heads
    if planned == local:
        return plan
    if planned != total:
        raise ValueError(
            f"layer {layer}: the method planned {planned} heads; expected the layer's {total} or this rank's {local}"
        )
    start, stop = call.head_offset, call.head_offset + local
    mask = plan.mask
    key = ("heads", start, stop)
    if key not in mask._derived:
        mask._derived[key] = _same_kind(mask, _table(mask)[:, start:stop])
    permutation = plan.permutation
    if permutation is not None and permutation.dim() == 2:
        permutation = permutation[start:stop]
    skip = tuple(h - start for h in plan.skip_heads if start <= h < stop)
    return AttentionPlan(mask._derived[key], permutation, skip_heads=skip)


def _uniform_attention(v: torch.Tensor, padding: tuple[list[int], list[int] | None] | None) -> torch.Tensor:
    """Output of attention spread evenly over the (valid) keys: the mean of V, ``(B, h, 1, D)`` broadcast to N rows."""
    if padding is None:
        return v.float().mean(dim=2, keepdim=True)
    key_lengths, query_lengths = padding
    lengths = torch.tensor(key_lengths, device=v.device)
    valid = torch.arange(v.shape[2], device=v.device)[None, :] < lengths[:, None]  # (B, Nk)
    mean = (v.float() * valid[:, None, :, None]).sum(dim=2, keepdim=True) / lengths[:, None, None, None]
    if query_lengths is None:
        return mean
    rows = torch.arange(v.shape[2], device=v.device)[None, :] < torch.tensor(query_lengths, device=v.device)[:, None]
    return mean * rows[:, None, :, None]  # padded queries attend to nothing: zeros, as SDPA gives them


def _reorder(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``x[:, :, perm]`` for a ``(N,)`` permutation, or per head for an ``(H, N)`` one; x is ``(B, H, N, D)``."""
    if perm.dim() == 1:
        return x[:, :, perm]
    index = perm[None, :, :, None].expand(x.shape[0], -1, -1, x.shape[-1])  # (B, H, N, D)
    return torch.gather(x, 2, index)


def _active_backend_name() -> str:
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    backend = getattr(_AttentionBackendRegistry, "_active_backend", "unknown")
    return str(getattr(backend, "value", backend))


_MASK_CHECK_ROWS = 1024  # mask rows compared at once: 1024 x N booleans (50 MB at N = 50,000)


def padding_lengths(attn_mask: torch.Tensor, batch: int, n_keys: int) -> tuple[list[int], list[int] | None]:
    """Per sample, how many leading keys a boolean padding mask keeps, and how many leading queries.

    Two masks are accepted: a key-padding mask ``(B or 1, 1, 1, Nk)`` (also ``(B, h, N, Nk)`` with equal
    rows), whose query count is None (every query attends); and the joint padding mask of HunyuanVideo 1.5,
    ``(B or 1, 1, N, Nk)`` with ``mask[b, 0, i, j] = keep[b, i] & keep[b, j]``, where padded queries attend to
    nothing (SDPA gives them zeros). Kept tokens must come first. ValueError for any other mask.
    """
    if attn_mask.dtype != torch.bool:
        raise ValueError(f"dit-sparse takes boolean key-padding masks only, got an attention mask of {attn_mask.dtype}")
    shape_error = ValueError(
        f"dit-sparse takes key-padding masks of shape (B, 1, 1, {n_keys}) or joint padding masks of shape "
        f"(B, 1, N, {n_keys}) (query i and key j both kept); got {tuple(attn_mask.shape)}"
    )
    if attn_mask.shape[-1] != n_keys or attn_mask.shape[0] not in (1, batch):
        raise shape_error
    rows = attn_mask.reshape(attn_mask.shape[0], -1, n_keys)  # (B, h * Nq, Nk)
    keys = rows.any(dim=1)  # (B, Nk): keys some query reads
    queries = rows.any(dim=2)  # (B, h * Nq): queries that read some key
    joint = attn_mask.dim() > 1 and attn_mask.shape[-2] > 1 and not bool(queries.all())
    if joint and (attn_mask.dim() != 4 or attn_mask.shape[1] != 1 or attn_mask.shape[2] != n_keys):
        raise shape_error
    # Every row must be the key mask (or, joint, empty for a padded query): checked in slices of rows, so
    # nothing of the mask's own N x N size is allocated again.
    for start in range(0, rows.shape[1], _MASK_CHECK_ROWS):
        part = rows[:, start : start + _MASK_CHECK_ROWS]
        expected = keys[:, None, :] & queries[:, start : start + _MASK_CHECK_ROWS, None] if joint else keys[:, None]
        if not torch.equal(part, expected.expand_as(part)):
            raise shape_error
    queries = queries if joint else None
    key_lengths = _prefix_lengths(keys, "keys")
    if queries is None:
        return [key_lengths[0]] * batch if len(key_lengths) < batch else key_lengths, None
    query_lengths = _prefix_lengths(queries, "queries")
    if len(key_lengths) < batch:
        key_lengths, query_lengths = key_lengths * batch, query_lengths * batch
    return key_lengths, query_lengths


def _prefix_lengths(kept: torch.Tensor, what: str) -> list[int]:
    """``kept.sum(-1)`` per row of a ``(B, N)`` boolean, which must keep a prefix."""
    lengths = kept.sum(dim=-1)
    prefix = torch.arange(kept.shape[-1], device=kept.device)[None, :] < lengths[:, None]
    if not torch.equal(prefix, kept):
        raise ValueError(f"dit-sparse takes padding masks whose kept {what} come first (padding at the end)")
    return [int(n) for n in lengths.tolist()]
