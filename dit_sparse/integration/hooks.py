"""diffusers hooks: one on the transformer (layout, step, context, timing), one per self-attention module, and
one per cross-attention module whose repeated padding keys are merged."""

from __future__ import annotations

import contextlib

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from .bridge import SDPAOverride, active_backend_scope, enter_cross, enter_layer, exit_cross, exit_layer
from .state import SparseState

TRANSFORMER_HOOK = "dit_sparse_transformer"
ATTENTION_HOOK = "dit_sparse_attention"
CROSS_HOOK = "dit_sparse_cross_attention"


class _NoState(BaseState):
    def reset(self, *args, **kwargs) -> None:
        pass


class SparseTransformerHook(ModelHook):
    """Reads each forward call's layout and step; receives the pipeline's ``cache_context`` (cond/uncond)."""

    _is_stateful = True

    def __init__(self, state: SparseState) -> None:
        super().__init__()
        self.sparse = state
        # diffusers hands the cache context (name, step index) to every StateManager of a stateful hook.
        self.context_manager = StateManager(_NoState)

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        token = self.sparse.begin_forward(module, args, kwargs, self.context_manager._context)
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            self.sparse.end_forward(token)

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.sparse.new_call()
        return module


class SparseAttentionHook(ModelHook):
    """Announces its layer to the bridge for the duration of the module's forward."""

    def __init__(self, state: SparseState, layer: int, bridge: str) -> None:
        super().__init__()
        self.sparse = state
        self.layer = layer
        self.bridge = bridge

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        token = enter_layer(self.sparse, self.layer)
        self.sparse.enter_module()
        if self.bridge == "sdpa":
            scope = SDPAOverride(self.sparse, self.layer)
        elif self.bridge == "global":
            scope = active_backend_scope(self.sparse, self.layer)
        else:
            scope = contextlib.nullcontext()
        try:
            with scope:
                return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            exit_layer(token)


class CrossAttentionHook(ModelHook):
    """Announces a cross-attention module to the bridge for the duration of its forward."""

    def __init__(self, state: SparseState, backend) -> None:
        super().__init__()
        self.sparse = state
        self.backend = backend  # the module's own attention backend, for calls that are not merged

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        token = enter_cross(self.sparse, self.backend)
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            exit_cross(token)


def register(module: torch.nn.Module, hook: ModelHook, name: str) -> None:
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)


def unregister(module: torch.nn.Module, name: str) -> None:
    registry = getattr(module, "_diffusers_hook", None)
    if registry is not None and registry.get_hook(name) is not None:
        registry.remove_hook(name, recurse=False)
