"""Routing self-attention calls of diffusers models into dit-sparse.

Two bridges, both scoped to the modules dit-sparse was applied to:

- ``dispatcher``: a diffusers attention backend named ``dit_sparse``. ``AttentionBackendName`` is a closed
  enum, so a member is added to it and the function registered with ``_AttentionBackendRegistry``; each
  self-attention module gets its own copy of its processor with ``_attention_backend`` set to that member.
  This is private diffusers API (pinned in pyproject; ``tests/integration/test_bridge.py`` fails loudly if
  an upgrade breaks it).
- ``sdpa``: CogVideoX's processor calls ``F.scaled_dot_product_attention`` itself; while one of its
  self-attention modules runs, a ``TorchFunctionMode`` redirects that one function to dit-sparse. No
  processor is copied or patched and nothing outside the module's forward is affected.

Which layer is running comes from a context variable that the per-module hook sets around the forward.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

if TYPE_CHECKING:
    from .state import SparseState

BACKEND_NAME = "dit_sparse"
_ACTIVE: contextvars.ContextVar[tuple[SparseState, int] | None] = contextvars.ContextVar(
    "dit_sparse_active_layer", default=None
)


def active_layer() -> tuple[SparseState, int] | None:
    return _ACTIVE.get()


def enter_layer(state: SparseState, layer: int) -> contextvars.Token:
    return _ACTIVE.set((state, layer))


def exit_layer(token: contextvars.Token) -> None:
    _ACTIVE.reset(token)


def _dit_sparse_backend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    _parallel_config: Any = None,
) -> torch.Tensor:
    """The ``dit_sparse`` dispatcher backend; q, k, v and the output are ``(B, N, H, D)`` as diffusers passes them."""
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

    active = _ACTIVE.get()
    if _parallel_config is not None:
        raise ValueError("dit-sparse does not support diffusers context parallelism yet")

    def dense(backend=None) -> torch.Tensor:
        return dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=attn_mask,
            dropout_p=dropout_p,
            is_causal=is_causal,
            scale=scale,
            enable_gqa=enable_gqa,
            backend=backend,
        )

    if active is None:  # a call that no dit-sparse hook announced: plain SDPA
        return dense(AttentionBackendName.NATIVE)
    state, layer = active
    if dropout_p or is_causal:
        raise ValueError("dit-sparse attention is for inference: dropout_p must be 0 and is_causal False")
    out = state.attend(
        layer,
        query.transpose(1, 2),  # (B, H, N, D)
        key.transpose(1, 2),
        value.transpose(1, 2),
        attn_mask=attn_mask,
        scale=scale,
        dense_fn=lambda: dense(state.original_backend(layer)).transpose(1, 2),
    )
    return out.transpose(1, 2)  # (B, N, H, D)


def backend_member():
    """The ``AttentionBackendName`` member for dit-sparse, adding and registering it on first use."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    member = AttentionBackendName._value2member_map_.get(BACKEND_NAME)
    if member is None:
        # The enum is closed; add a member the way Enum builds its own (str mixin, name, value).
        member = str.__new__(AttentionBackendName, BACKEND_NAME)
        member._name_ = "DIT_SPARSE"
        member._value_ = BACKEND_NAME
        member.__objclass__ = AttentionBackendName
        AttentionBackendName._member_map_["DIT_SPARSE"] = member
        AttentionBackendName._value2member_map_[BACKEND_NAME] = member
        AttentionBackendName._member_names_.append("DIT_SPARSE")
    if _AttentionBackendRegistry._backends.get(member) is not _dit_sparse_backend:
        _AttentionBackendRegistry.register(member, constraints=[])(_dit_sparse_backend)
    return member


class SDPAOverride(TorchFunctionMode):
    """Sends ``F.scaled_dot_product_attention`` calls to dit-sparse while a self-attention module runs."""

    def __init__(self, state: SparseState, layer: int) -> None:
        super().__init__()
        self.state = state
        self.layer = layer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        call = dict(zip(names, args, strict=False)) | kwargs
        if call.get("dropout_p", 0.0) or call.get("is_causal", False):
            raise ValueError("dit-sparse attention is for inference: dropout_p must be 0 and is_causal False")
        return self.state.attend(
            self.layer,
            call["query"],  # (B, H, N, D)
            call["key"],
            call["value"],
            attn_mask=call.get("attn_mask"),
            scale=call.get("scale"),
            dense_fn=lambda: func(*args, **kwargs),
        )
