"""``apply_sparse_attention`` / ``remove_sparse_attention`` / ``summary``: the public entry points."""

from __future__ import annotations

import copy
import json
import logging
import os
from typing import Any

import torch

from ..config import SparseAttentionConfig
from ..plan import PLAN_FORMAT, SparsityPlan, config_hash
from .bridge import backend_member
from .hooks import (
    ATTENTION_HOOK,
    CROSS_HOOK,
    TRANSFORMER_HOOK,
    CrossAttentionHook,
    SparseAttentionHook,
    SparseTransformerHook,
    register,
    unregister,
)
from .specs import spec_for
from .state import SparseState

logger = logging.getLogger(__name__)

_STATE_ATTR = "_dit_sparse_state"
_TRANSFORMER_ATTRS = ("transformer", "transformer_2")


def _transformers(target: Any) -> list[tuple[str, torch.nn.Module]]:
    """The transformers of a pipeline (Wan 2.2 has two), or the module itself."""
    if isinstance(target, torch.nn.Module):
        return [("transformer", target)]
    found = [(name, getattr(target, name, None)) for name in _TRANSFORMER_ATTRS]
    found = [(name, module) for name, module in found if isinstance(module, torch.nn.Module)]
    if not found:
        raise ValueError(
            f"expected a diffusers pipeline with a .transformer or a transformer module, got {type(target).__name__}"
        )
    return found


def _load_config(config: Any) -> SparseAttentionConfig:
    if isinstance(config, SparseAttentionConfig):
        return config
    if isinstance(config, SparsityPlan):
        return _plan_config(config)
    if isinstance(config, dict):
        return SparseAttentionConfig.from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError as error:
            raise ValueError(f"no such config file: {path}") from error
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from error
        if isinstance(data, dict) and data.get("format") == PLAN_FORMAT:  # a calibrated plan file
            return _plan_config(SparsityPlan.from_dict(data, path=path))
        if isinstance(data, dict) and "config" in data and "method" not in data:
            data = data["config"]
        return SparseAttentionConfig.from_dict(data)
    raise ValueError(
        "expected a SparseAttentionConfig, a SparsityPlan, a dict or a path to a JSON config or plan, got "
        f"{type(config).__name__}"
    )


def _plan_config(plan: Any) -> SparseAttentionConfig:
    return SparseAttentionConfig(plan.provenance.search.method, plan=plan, block_size=plan.block_size)


def _check_plan_model(plan: SparsityPlan, transformer: torch.nn.Module) -> None:
    """ValueError unless ``transformer`` is the kind of model ``plan`` was made for.

    Checks the class, the number of self-attention layers and the heads of each; a different config
    hash (e.g. another patch size) with everything else equal is logged as a warning.
    """
    name = type(transformer).__name__
    expected = plan.provenance.model_class
    if name != expected:
        raise ValueError(
            f"this plan was calibrated for a {expected}, but the model is a {name}; calibrate a plan for it"
        )
    layers = spec_for(transformer).self_attention(transformer)
    if len(layers) != plan.num_layers:
        raise ValueError(
            f"this plan has {plan.num_layers} self-attention layers, but the {name} has {len(layers)}; "
            "it was calibrated for another model size"
        )
    heads = [int(getattr(layer, "heads", 0)) for layer in layers]
    wrong = [(i, p, m) for i, (p, m) in enumerate(zip(plan.heads_per_layer, heads, strict=True)) if p != m]
    if wrong:
        layer, planned, actual = wrong[0]
        raise ValueError(
            f"this plan has {planned} heads in layer {layer}, but the {name} has {actual} there "
            f"({len(wrong)} layer(s) differ); it was calibrated for another model size"
        )
    if plan.provenance.config_hash is not None and plan.provenance.config_hash != config_hash(transformer):
        logger.warning(
            "dit-sparse: the %s config differs from the one this plan was calibrated on (same layers and "
            "heads); its patterns may fit less well",
            name,
        )


def apply_sparse_attention(target: Any, config: Any = None) -> None:
    """Replace the self-attention of a diffusers pipeline's transformer(s) with sparse attention.

    Per instance and reversible: other pipelines in the process are untouched, and
    :func:`remove_sparse_attention` restores bit-identical dense output. Applying again replaces the
    previous configuration (it is removed first). Cross-attention stays dense; where its keys end in repeated
    padding rows (Wan's zero-padded prompts) they are merged into one key, which gives the same result up to
    rounding (``config.merge_padding_keys``, on by default; see :mod:`dit_sparse.integration.cross`).

    Args:
        target: a supported diffusers pipeline (all its transformers, e.g. both of Wan 2.2) or transformer.
        config (`SparseAttentionConfig`, `dict`, `SparsityPlan`, or path to a JSON config or plan file,
            defaults to radial): what to run. A plan is checked against the model (class, layers, heads).

    Example:
        >>> import dit_sparse as ds  # doctest: +SKIP
        >>> ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("radial", dense_steps=10))  # doctest: +SKIP
    """
    config = _load_config(SparseAttentionConfig() if config is None else config)
    transformers = _transformers(target)
    specs = [spec_for(module) for _, module in transformers]  # validate everything before changing anything
    if config.plan is not None:
        if len(transformers) != 1:
            raise ValueError(f"a plan covers one transformer; this pipeline has {[n for n, _ in transformers]}")
        _check_plan_model(config.plan, transformers[0][1])
    for (_, module), spec in zip(transformers, specs, strict=True):
        if getattr(module, _STATE_ATTR, None) is not None:
            _remove(module)
        layers = spec.self_attention(module)
        originals = [layer.processor for layer in layers]
        state = SparseState(spec, config, [getattr(p, "_attention_backend", None) for p in originals])
        state.original_processors = originals
        if spec.bridge == "dispatcher":
            member = backend_member()
            for layer in layers:
                # Own copy per module: processors may be shared with cross-attention or other layers.
                processor = copy.copy(layer.processor)
                processor._attention_backend = member
                layer.processor = processor
        cross = _cross_attention_modules(module, layers) if config.merge_padding_keys else []
        state.cross_layers, state.original_cross_processors = cross, [layer.processor for layer in cross]
        for layer in cross:
            processor = copy.copy(layer.processor)
            backend, processor._attention_backend = processor._attention_backend, backend_member()
            layer.processor = processor
            register(layer, CrossAttentionHook(state, backend), CROSS_HOOK)
        register(module, SparseTransformerHook(state), TRANSFORMER_HOOK)
        for index, layer in enumerate(layers):
            register(layer, SparseAttentionHook(state, index, spec.bridge), ATTENTION_HOOK)
        module._diffusers_hook.invalidate_child_registries_cache()
        setattr(module, _STATE_ATTR, state)
        logger.info("dit-sparse: %s on %s (%d self-attention layers)", config.method, spec.name, len(layers))


def _cross_attention_modules(transformer: torch.nn.Module, self_attention: list) -> list[torch.nn.Module]:
    """The text cross-attention modules (``attn2``) whose processors call diffusers' dispatcher (the Wan family);
    other cross-attention (Wan Animate's face adapters) is left alone."""
    own = {id(layer) for layer in self_attention}
    return [
        m
        for name, m in transformer.named_modules()
        if name.rsplit(".", 1)[-1] == "attn2"
        and getattr(m, "is_cross_attention", False) is True
        and id(m) not in own
        and hasattr(getattr(m, "processor", None), "_attention_backend")
    ]


def _restore_processor(layer: torch.nn.Module, original: Any) -> None:
    # enable_parallelism() after apply set the config on our copies only; the restored processor needs it.
    parallel = getattr(layer.processor, "_parallel_config", None)
    if parallel is not None and hasattr(original, "_parallel_config"):
        original._parallel_config = parallel
    layer.processor = original


def _remove(module: torch.nn.Module) -> None:
    state: SparseState = getattr(module, _STATE_ATTR)
    layers = state.spec.self_attention(module)
    for layer, original in zip(state.cross_layers, state.original_cross_processors, strict=True):
        unregister(layer, CROSS_HOOK)
        _restore_processor(layer, original)
    for layer, original in zip(layers, state.original_processors, strict=True):
        unregister(layer, ATTENTION_HOOK)
        _restore_processor(layer, original)
    unregister(module, TRANSFORMER_HOOK)
    module._diffusers_hook.invalidate_child_registries_cache()
    delattr(module, _STATE_ATTR)


def remove_sparse_attention(target: Any) -> None:
    """Undo :func:`apply_sparse_attention`; a no-op where nothing was applied."""
    for _, module in _transformers(target):
        if getattr(module, _STATE_ATTR, None) is not None:
            _remove(module)


def sparse_state(module: torch.nn.Module) -> SparseState | None:
    return getattr(module, _STATE_ATTR, None)


def summary(target: Any) -> dict[str, Any]:
    """Statistics of the last pipeline call (or the calls since the last new generation).

    Keys: ``total_seconds`` (the whole pipeline call, when it ran through a ``dit_sparse.pipelines``
    class, else ``None``), ``transformer_seconds``, ``attention_seconds`` (self-attention only),
    ``mean_density`` (over self-attention calls; dense calls count 1), ``searches`` (masks computed),
    ``reuses`` (calls served from a cached mask), ``per_layer`` (mean density per layer),
    ``full_mask_calls`` (calls whose mask kept every block and so ran the model's dense attention),
    ``search_seconds`` (method calls that searched or built a mask: scoring passes, pattern construction),
    ``overhead_seconds`` (dit-sparse's own work besides the attention kernels and the searches: mask
    lookups, permutations, head slicing, the transformer hook) and ``overhead_fraction`` (that over
    ``attention_seconds``), ``cross_attention_calls`` (calls of the cross-attention modules dit-sparse
    watches, Wan's ``attn2``), ``merged_cross_calls`` (those whose repeated padding keys were merged into
    one) and ``merged_keys_per_call`` (keys each such merge left out, on average), and for pipelines with
    several transformers their own summaries under ``transformers``.
    """
    states = [(name, sparse_state(module)) for name, module in _transformers(target)]
    states = [(name, state) for name, state in states if state is not None]
    if not states:
        raise ValueError("dit-sparse is not applied to this pipeline or transformer")
    parts = {name: state.summary() for name, state in states}
    if len(parts) == 1:
        return next(iter(parts.values()))
    calls = sum(p["attention_calls"] for p in parts.values())
    weighted = sum((p["mean_density"] or 0.0) * p["attention_calls"] for p in parts.values())
    first = next(iter(parts.values()))
    attention = sum(p["attention_seconds"] for p in parts.values())
    overhead = sum(p["overhead_seconds"] for p in parts.values())
    return {
        "model": first["model"],
        "method": first["method"],
        "total_seconds": first["total_seconds"],
        "transformer_seconds": sum(p["transformer_seconds"] for p in parts.values()),
        "attention_seconds": attention,
        "search_seconds": sum(p["search_seconds"] for p in parts.values()),
        "overhead_seconds": overhead,
        "overhead_fraction": overhead / attention if attention else None,
        "full_mask_calls": sum(p["full_mask_calls"] for p in parts.values()),
        "mean_density": weighted / calls if calls else None,
        "searches": sum(p["searches"] for p in parts.values()),
        "reuses": sum(p["reuses"] for p in parts.values()),
        "per_layer": first["per_layer"],
        "attention_calls": calls,
        "cross_attention_calls": sum(p["cross_attention_calls"] for p in parts.values()),
        "merged_cross_calls": sum(p["merged_cross_calls"] for p in parts.values()),
        "merged_keys_per_call": _weighted_mean(
            [(p["merged_keys_per_call"], p["merged_cross_calls"]) for p in parts.values()]
        ),
        "transformers": parts,
    }


def _weighted_mean(pairs: list[tuple[float | None, int]]) -> float | None:
    total = sum(n for value, n in pairs if value is not None)
    return sum(value * n for value, n in pairs if value is not None) / total if total else None
