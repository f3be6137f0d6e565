"""``calibrate(pipe, prompts, ...)``: run the dense model, search every head's pattern, return a SparsityPlan.

The offline half of Sparse-vDiT (Chen et al., 2025, https://arxiv.org/abs/2506.03065): dense generations
on a few prompts; at sampled steps, every self-attention call's q, k, v feed per-(step bucket, layer)
:class:`~dit_sparse.calibration.search.HeadStatistics` as the call happens (nothing is kept but the
statistics, ``(H, nQ, nK)`` per layer and bucket); then each head gets the cheapest candidate meeting the
target. Statistics pool every sampled call of a bucket (prompts, steps, cond and uncond), so the target is
met on average over them.

``method="paro"`` runs PAROAttention's offline selection (Zhao et al., 2025,
https://arxiv.org/abs/2506.16054) on the same dense runs instead: per (step bucket, layer),
:class:`~dit_sparse.methods.paro.OrderStatistics` pools block attention mass and quantization error in all
six token orders, and :func:`~dit_sparse.methods.paro.choose_orders` gives each head its order and a static
block mask at ``density``; the plan stores them as ``"mask"`` heads with an ``order``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..cost import CostModel
from ..heads import HeadPattern, table_density
from ..layout import VideoLayout
from ..mask import SUPPORTED_BLOCK_SIZES
from ..methods.paro import OrderStatistics, choose_orders
from ..plan import SEARCH_METHODS, Provenance, SearchSettings, SparsityPlan, StepBucket, config_hash, prompts_hash
from .cost import measure_cost_profile
from .search import HeadStatistics, check_target, default_candidates

logger = logging.getLogger(__name__)


def step_bucket_ranges(step_buckets: int | Sequence[int], num_steps: int) -> list[tuple[int, int | None]]:
    """``[start, stop)`` ranges of the buckets (the last open-ended) for ``num_steps`` denoising steps.

    Args:
        step_buckets (`int` or `Sequence[int]`): a number of equal contiguous buckets, or their start steps
            (``[0, 10, 30]``: steps 0-9, 10-29, 30-end).
        num_steps (`int`): denoising steps of the calibration runs.
    """
    if isinstance(step_buckets, int) and not isinstance(step_buckets, bool):
        if not 1 <= step_buckets <= num_steps:
            raise ValueError(f"step_buckets must be between 1 and the {num_steps} steps, got {step_buckets}")
        starts = sorted({round(i * num_steps / step_buckets) for i in range(step_buckets)})
    else:
        starts = list(step_buckets) if isinstance(step_buckets, (list, tuple)) else None
        if (
            not starts
            or starts[0] != 0
            or any(isinstance(s, bool) or not isinstance(s, int) for s in starts)
            or starts != sorted(set(starts))
            or starts[-1] >= num_steps
        ):
            raise ValueError(
                f"step_buckets must be a number of buckets or increasing start steps from 0 below {num_steps}, "
                f"got {step_buckets!r}"
            )
    return [(start, starts[i + 1] if i + 1 < len(starts) else None) for i, start in enumerate(starts)]


def _sampled_steps(buckets: list[tuple[int, int | None]], num_steps: int, per_bucket: int | None) -> list[int]:
    steps = []
    for start, stop in buckets:
        inside = list(range(start, num_steps if stop is None else stop))
        if per_bucket is not None and per_bucket < len(inside):
            # evenly spread over the bucket, first and last step included
            picks = {inside[round(i * (len(inside) - 1) / max(per_bucket - 1, 1))] for i in range(per_bucket)}
            inside = sorted(picks)
        steps += inside
    return steps


def _default_steps(pipe) -> int:
    parameter = inspect.signature(type(pipe).__call__).parameters.get("num_inference_steps")
    if parameter is None or not isinstance(parameter.default, int):
        raise ValueError(f"{type(pipe).__name__} has no default num_inference_steps; pass num_inference_steps")
    return parameter.default


def _jsonable_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The pipeline arguments worth recording (numbers, strings, lists of them); tensors and objects left out."""

    def plain(value: Any) -> bool:
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (bool, int, float, str))

    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items() if plain(v)}


def calibrate(
    pipe: Any,
    prompts: str | Sequence[str],
    *,
    method: str = "sparse_vdit",
    target_recall: float | None = None,
    max_rel_l2: float | None = None,
    num_inference_steps: int | None = None,
    step_buckets: int | Sequence[int] = 1,
    steps_per_bucket: int | None = None,
    candidates: Sequence[HeadPattern] | None = None,
    block_size: int = 128,
    cost: str | CostModel = "auto",
    negative_prompt: str | None = None,
    seed: int = 0,
    progress: bool = True,
    backend: str = "auto",
    density: float = 0.25,
    quant_weight: float = 1.0,
    quant: str | None = None,
    levels: bool = False,
    **pipeline_kwargs: Any,
) -> SparsityPlan:
    """Search, per (step bucket, layer, head), the cheapest pattern meeting a quality target; return the plan.

    Args:
        pipe: a supported diffusers pipeline with one transformer.
        prompts (`str` or `list[str]`): calibration prompts (a few varied ones; each is one dense generation).
        method (`str`, defaults to ``"sparse_vdit"``): the search: ``"sparse_vdit"`` (per-head patterns
            meeting a target) or ``"paro"`` (per-head token orders and masks at ``density``).
        target_recall (`float`, optional): keep at least this fraction of each head's attention mass.
        max_rel_l2 (`float`, optional): or: keep each head's output relative L2 error at most this.
        num_inference_steps (`int`, optional): denoising steps (default: the pipeline's default).
        step_buckets (`int` or `list[int]`, defaults to 1): equal step buckets, or their start steps.
        steps_per_bucket (`int`, optional): steps sampled per bucket (evenly spread); default every step.
        candidates (`list[HeadPattern]`, optional): default
            :func:`~dit_sparse.calibration.search.default_candidates` for the model's layout.
        block_size (`int`, defaults to 128): mask block size of the plan.
        cost (`str` or `CostModel`, defaults to ``"auto"``): ``"flops"`` (analytic), ``"measured"`` (time the
            kernel on the transformer's device, stored in the plan), ``"auto"`` (measured on a GPU, else
            analytic), or a ready :class:`CostModel`.
        negative_prompt (`str`, optional): for classifier-free guidance.
        seed (`int`, defaults to 0): prompt ``i`` runs with seed ``seed + i``.
        progress (`bool`, defaults to True): a progress bar with ETA over all denoising steps.
        backend (`str`, defaults to ``"auto"``): block-mass backend of the search.
        density (`float`, defaults to 0.25): ``"paro"`` only: fraction of key blocks kept per query block.
        quant_weight (`float`, defaults to 1.0): ``"paro"`` only: weight of the quantization error in the
            order score (0: order by sparsity alone).
        quant (`str`, optional): ``"paro"`` only: the quantization the plan will run with (``"int8"`` or
            ``"int4"``), which sets the bits of the quantization term (default 8).
        levels (`bool`, defaults to False): ``"sparse_vdit"`` only, with the default candidates: also offer every
            head Pyramid Sparse Attention level tables (``"mask"`` heads whose blocks are full, pooled by 2 or 8
            tokens, or dropped, by PSA's quotas at compute 5-40%; see
            :func:`~dit_sparse.calibration.search.default_candidates`). Their price is their compute (a block
            pooled by ``2^j`` costs ``1/2^j``), their quality measured through the pooled keys; the plan stores
            the chosen tables and runs them with :func:`dit_sparse.pyramid_attention`. Needs ``max_rel_l2``.
        **pipeline_kwargs: passed to every pipeline call (``height``, ``width``, ``num_frames``,
            ``guidance_scale``, ...).

    Returns:
        `SparsityPlan`. Save it with ``plan.save("plan.json")``; apply it with
        ``apply_sparse_attention(pipe, plan)``.

    Example:
        >>> plan = ds.calibrate(pipe, ["a red fox running"], target_recall=0.95, num_inference_steps=50,
        ...                     step_buckets=[0, 10, 30], steps_per_bucket=2)  # doctest: +SKIP
        >>> print(plan.summary_table())  # doctest: +SKIP
    """
    from ..integration.apply import _transformers, apply_sparse_attention, remove_sparse_attention, sparse_state
    from ..integration.specs import spec_for

    paro = _check_method(method, target_recall, max_rel_l2, candidates, density, quant_weight, quant)
    if levels and target_recall is not None:
        raise ValueError(
            "levels=True needs max_rel_l2: level tables are scored by their output error (a pooled block's attention "
            "mass is only approximated, so target_recall would count it as kept)"
        )
    if levels and (paro or candidates is not None):
        raise ValueError(
            "levels=True adds level tables to the default candidates of method 'sparse_vdit'; with your own "
            "candidates add HeadPattern('mask', {'pyramid': density}) to them instead"
        )
    metric = None if paro else check_target(target_recall, max_rel_l2)
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list or not all(isinstance(p, str) and p.strip() for p in prompt_list):
        raise ValueError(f"prompts must be a non-empty list of non-empty strings, got {prompts!r}")
    if block_size not in SUPPORTED_BLOCK_SIZES:
        raise ValueError(f"block_size must be one of {SUPPORTED_BLOCK_SIZES}, got {block_size!r}")
    if isinstance(cost, str) and cost not in ("auto", "flops", "measured"):
        raise ValueError(f"cost must be 'auto', 'flops', 'measured' or a CostModel, got {cost!r}")
    if not isinstance(cost, (str, CostModel)):
        raise ValueError(f"cost must be 'auto', 'flops', 'measured' or a CostModel, got {type(cost).__name__}")
    if steps_per_bucket is not None and (
        isinstance(steps_per_bucket, bool) or not isinstance(steps_per_bucket, int) or steps_per_bucket < 1
    ):
        raise ValueError(f"steps_per_bucket must be None or an int >= 1, got {steps_per_bucket!r}")
    transformers = _transformers(pipe)
    if len(transformers) != 1:
        names = [name for name, _ in transformers]
        raise ValueError(f"calibrate covers pipelines with one transformer; this one has {names}")
    transformer = transformers[0][1]
    spec = spec_for(transformer)
    steps = _default_steps(pipe) if num_inference_steps is None else num_inference_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"num_inference_steps must be an int >= 1, got {steps!r}")
    buckets = step_bucket_ranges(step_buckets, steps)
    sampled = set(_sampled_steps(buckets, steps, steps_per_bucket))
    bucket_of = {
        step: next(i for i, (a, b) in enumerate(buckets) if a <= step and (b is None or step < b)) for step in sampled
    }
    layers = spec.self_attention(transformer)
    heads_per_layer = [int(layer.heads) for layer in layers]

    stats: dict[tuple[int, int], Any] = {}  # HeadStatistics, or OrderStatistics for "paro"
    seen: dict[str, Any] = {}

    def search_candidates(layout: VideoLayout) -> Sequence[HeadPattern] | None:
        if candidates is not None or not levels:
            return candidates
        return default_candidates(layout, block_size, sink_frames=spec.sink_frames, levels=True)

    def observe(state, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        if state.step not in sampled:
            return
        layout = state.layout
        if seen.setdefault("layout", layout) != layout:
            raise ValueError(f"calibration calls changed token grid from {seen['layout']} to {layout}")
        seen.setdefault("head_dim", q.shape[-1])
        seen.setdefault("device", q.device)
        seen.setdefault("dtype", q.dtype)
        key = (bucket_of[state.step], layer)
        padding = state.padding(q.shape[0], k.shape[2])  # padded text (HunyuanVideo): left out, as the model does
        key_lengths, query_lengths = (None, None) if padding is None else padding
        if paro:
            if key not in stats:
                stats[key] = OrderStatistics(layout, block_size, quant_bits=4 if quant == "int4" else 8)
            stats[key].update(q, k, key_lengths=key_lengths, query_lengths=query_lengths)
            return
        if key not in stats:
            stats[key] = HeadStatistics(
                layout,
                q.shape[1],
                search_candidates(layout),
                metric=metric,
                block_size=block_size,
                backend=backend,
                sink_frames=spec.sink_frames,
            )
        stats[key].add(q, k, v, key_lengths=key_lengths, query_lengths=query_lengths)

    previous = sparse_state(transformer)
    previous_config = None if previous is None else previous.config
    apply_sparse_attention(transformer, _dense_config())
    state = sparse_state(transformer)
    state.observers.append(observe)
    bar = tqdm(total=len(prompt_list) * steps, desc="calibrating", unit="step", disable=not progress)
    progress_config = getattr(pipe, "_progress_bar_config", None)
    accepted = set(inspect.signature(type(pipe).__call__).parameters)
    try:
        if progress and hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)  # one bar for the whole calibration, not one per prompt
        for index, prompt in enumerate(prompt_list):
            kwargs = _call_kwargs(pipe, accepted, prompt, steps, seed + index, negative_prompt, transformer, bar)
            kwargs.update(pipeline_kwargs)
            with torch.no_grad():
                pipe(**kwargs)
            if "callback_on_step_end" not in accepted:
                bar.update(steps)
    finally:
        bar.close()
        if progress and progress_config is not None:
            pipe._progress_bar_config = progress_config
        elif progress and hasattr(pipe, "_progress_bar_config"):
            del pipe._progress_bar_config
        state.observers.remove(observe)
        remove_sparse_attention(transformer)
        if previous_config is not None:
            apply_sparse_attention(transformer, previous_config)
    if "layout" not in seen:
        raise ValueError("the pipeline made no self-attention call at the sampled steps; nothing to calibrate")
    layout = seen["layout"]
    missing = [(b, layer) for b in range(len(buckets)) for layer in range(len(layers)) if (b, layer) not in stats]
    if missing:
        raise ValueError(f"no calls were seen for (bucket, layer) {missing[:5]}; check num_inference_steps")
    cost_model = _cost_model(cost, layout.num_tokens, seen, max(heads_per_layer), block_size)
    plan_buckets = []
    for b, (start, stop) in enumerate(buckets):
        if paro:
            chosen = [_paro_heads(stats[(b, layer)], density, quant_weight) for layer in range(len(layers))]
        else:
            chosen = [
                stats[(b, layer)].choose(target_recall=target_recall, max_rel_l2=max_rel_l2, cost=cost_model)
                for layer in range(len(layers))
            ]
        plan_buckets.append(StepBucket(start, stop, chosen))
    provenance = Provenance(
        model_class=type(transformer).__name__,
        num_layers=len(layers),
        heads_per_layer=heads_per_layer,
        layout=layout,
        block_size=block_size,
        config_hash=config_hash(transformer),
        prompts_hash=prompts_hash(prompt_list),
        num_prompts=len(prompt_list),
        search=SearchSettings(
            method=method,
            target_recall=target_recall,
            max_rel_l2=max_rel_l2,
            num_inference_steps=steps,
            calibration_steps=sorted(sampled),
            candidates=None if paro else list(stats[(0, 0)].candidates),
            seed=seed,
            pipeline_kwargs=_jsonable_kwargs({"negative_prompt": negative_prompt, **pipeline_kwargs}),
            density=density if paro else None,
            quant_weight=quant_weight if paro else None,
        ),
    )
    plan = SparsityPlan(provenance, plan_buckets, cost_model)
    logger.info("dit-sparse: calibrated %s (%d layers, %d buckets)", provenance.model_class, len(layers), len(buckets))
    return plan


def _check_method(method, target_recall, max_rel_l2, candidates, density, quant_weight, quant) -> bool:
    """Whether the search is PARO's (checking its arguments); ValueError for an unknown method or mixed options."""
    from ..config import _validate_paro
    from ..kernels.quant import check_quant

    if method not in SEARCH_METHODS:
        raise ValueError(f"method must be one of {list(SEARCH_METHODS)}, got {method!r}")
    if method != "paro":
        return False
    options = {"target_recall": target_recall, "max_rel_l2": max_rel_l2, "candidates": candidates}
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise ValueError(f"method 'paro' chooses orders and masks at a density; {given} do not apply to it")
    _validate_paro({"density": density, "quant_weight": quant_weight}, 0)
    check_quant(quant)
    return True


def _paro_heads(stats, density: float, quant_weight: float) -> list[HeadPattern]:
    """One layer's heads as ``"mask"`` patterns in their chosen orders, with the recall measured for them."""
    n = stats.layout.num_tokens
    return [
        HeadPattern(
            "mask",
            order=head.order,
            blocks=head.table.cpu(),
            density=table_density(head.table, n, stats.block_size),
            recall=max(head.recall, 0.0),
        )
        for head in choose_orders(stats, density=density, quant_weight=quant_weight)
    ]


def _dense_config():
    from ..config import SparseAttentionConfig

    return SparseAttentionConfig("dense")


def _call_kwargs(pipe, accepted, prompt, steps, seed, negative_prompt, transformer, bar) -> dict[str, Any]:
    device = transformer.device
    generator = torch.Generator("cuda" if device.type == "cuda" else "cpu").manual_seed(seed)
    kwargs: dict[str, Any] = {"prompt": prompt, "num_inference_steps": steps, "generator": generator}
    if negative_prompt is not None:
        kwargs["negative_prompt"] = negative_prompt
    if "output_type" in accepted:
        kwargs["output_type"] = "latent"  # the statistics come from the transformer; decoding would be wasted
    if "callback_on_step_end" in accepted:

        def advance(pipeline, step, timestep, callback_kwargs):
            bar.update(1)
            return callback_kwargs

        kwargs["callback_on_step_end"] = advance
    return kwargs


def _cost_model(cost: str | CostModel, num_tokens: int, seen: dict, heads: int, block_size: int) -> CostModel:
    if isinstance(cost, CostModel):
        return cost
    device = seen["device"]
    if cost == "flops" or (cost == "auto" and device.type != "cuda"):
        return CostModel.flops()
    dtype = seen["dtype"] if seen["dtype"] in (torch.float16, torch.bfloat16) or device.type != "cuda" else None
    profile = measure_cost_profile(
        num_tokens, seen["head_dim"], num_heads=heads, block_size=block_size, device=device, dtype=dtype
    )
    logger.info(
        "dit-sparse: measured %s on %s: dense %.3f ms, relative times %s",
        profile.backend,
        profile.device,
        profile.dense_ms,
        [round(t, 3) for t in profile.relative_times],
    )
    return profile
