"""Routing self-attention calls of diffusers models into dit-sparse.

Two bridges, both scoped to the modules dit-sparse was applied to:

- ``dispatcher``: a diffusers attention backend named ``dit_sparse``. ``AttentionBackendName`` is a closed
  enum, so a member is added to it and the function registered with ``_AttentionBackendRegistry``; each
  self-attention module gets its own copy of its processor with ``_attention_backend`` set to that member.
  This is private diffusers API (pinned in pyproject; ``tests/integration/test_bridge.py`` fails loudly if
  an upgrade breaks it).
- ``global``: Cosmos's processor calls the dispatcher without its own backend, so diffusers' globally active
  backend runs it. While one of its self-attention modules runs, the active backend is dit-sparse's, and the
  backend it replaced (native, flex, flash, sage, ...) is the layer's dense path.
- ``sdpa``: CogVideoX's processor calls ``F.scaled_dot_product_attention`` itself; while one of its
  self-attention modules runs, a ``TorchFunctionMode`` redirects that one function to dit-sparse. No
  processor is copied or patched and nothing outside the module's forward is affected.

Which layer is running comes from a context variable that the per-module hook sets around the forward.

Context parallelism (``transformer.enable_parallelism`` with ``ContextParallelConfig(ulysses_degree=N)``): the
backend is registered as supporting it, and under a parallel config it runs through diffusers' own templated
Ulysses attention, which all-to-alls q, k, v from (sequence slice, all heads) to (whole sequence, head slice),
calls the backend's forward op, and all-to-alls the output back. The forward op tells the state which heads
the rank holds, so per-head plans are sliced and dynamic methods search only the local heads.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
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
# Set while a cross-attention module that dit-sparse merges padding keys in runs: its state and the module's
# original backend (see :mod:`dit_sparse.integration.cross`).
_CROSS: contextvars.ContextVar[tuple[SparseState, Any] | None] = contextvars.ContextVar(
    "dit_sparse_cross_attention", default=None
)


def active_layer() -> tuple[SparseState, int] | None:
    return _ACTIVE.get()


def enter_layer(state: SparseState, layer: int) -> contextvars.Token:
    return _ACTIVE.set((state, layer))


def exit_layer(token: contextvars.Token) -> None:
    _ACTIVE.reset(token)


def enter_cross(state: SparseState, backend: Any) -> contextvars.Token:
    return _CROSS.set((state, backend))


def exit_cross(token: contextvars.Token) -> None:
    _CROSS.reset(token)


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
    """The ``dit_sparse`` dispatcher backend; q, k, v and the output are ``(B, N, H, D)`` as diffusers passes them.

    Under context parallelism (``_parallel_config``, set by ``enable_parallelism``) each rank passes its slice
    of the sequence for all heads; see :func:`_ulysses_attention`.
    """
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

    active = _ACTIVE.get()
    context_parallel = _parallel_config is not None and _parallel_config.context_parallel_config is not None

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
            parallel_config=_parallel_config if context_parallel else None,
        )

    if active is None:
        cross = _CROSS.get()
        if cross is None:  # a call that no dit-sparse hook announced: plain SDPA
            return dense(AttentionBackendName.NATIVE)
        state, backend = cross  # a cross-attention module's call; under context parallelism its own backend runs it
        if context_parallel:
            return dense(backend)
        return state.attend_cross(
            query, key, value, attn_mask, dropout_p, is_causal, scale, dense_fn=lambda: dense(backend)
        )
    state, layer = active
    if dropout_p or is_causal:
        raise ValueError("dit-sparse attention is for inference: dropout_p must be 0 and is_causal False")
    if context_parallel:
        return _ulysses_attention(state, layer, query, key, value, attn_mask, scale, _parallel_config)
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


def _ulysses_attention(
    state: SparseState,
    layer: int,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None,
    scale: float | None,
    parallel_config: Any,
) -> torch.Tensor:
    """One layer under Ulysses, through diffusers' templated context-parallel attention.

    Args:
        state (`SparseState`): the transformer's state; it has checked the parallel config at the forward.
        layer (`int`): the self-attention layer.
        query, key, value (`torch.Tensor`): ``(B, N / degree, H, D)``, this rank's slice of the sequence.
        attn_mask (`torch.Tensor`, optional): key-padding mask, as the dispatcher passes it.
        scale (`float`, optional): softmax scale.
        parallel_config (`ParallelConfig`): the model's, with a ``context_parallel_config``.

    Returns:
        `torch.Tensor`: ``(B, N / degree, H, D)``, this rank's slice of the output.
    """
    from diffusers.models.attention_dispatch import _templated_context_parallel_attention

    cp = parallel_config.context_parallel_config
    total_heads = query.shape[2]
    # Rank r receives heads [r * ceil(H / N), ...): with H divisible by N that is H / N heads each; with
    # ulysses_anything the heads are padded to a multiple of N and the last rank holds the remainder.
    head_offset = cp._ulysses_local_rank * -(-total_heads // cp.ulysses_degree)
    forward_op = functools.partial(
        _ulysses_forward_op, state=state, layer=layer, head_offset=head_offset, total_heads=total_heads
    )
    return _templated_context_parallel_attention(
        query,
        key,
        value,
        attn_mask,
        0.0,
        False,
        scale,
        False,
        False,
        forward_op=forward_op,
        backward_op=_ulysses_backward_op,
        _parallel_config=parallel_config,
    )


def _ulysses_forward_op(
    ctx: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None,
    dropout_p: float,
    is_causal: bool,
    scale: float | None,
    enable_gqa: bool,
    return_lse: bool,
    _save_ctx: bool = True,
    _parallel_config: Any = None,
    *,
    state: SparseState,
    layer: int,
    head_offset: int,
    total_heads: int,
) -> torch.Tensor:
    """The forward op diffusers' Ulysses wrapper calls between its all-to-alls; q, k, v are ``(B, N, h, D)``:
    the whole sequence for heads ``[head_offset, head_offset + h)`` of ``total_heads``."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    if return_lse:  # only ring attention asks, and the state rejects ring configs before any attention runs
        raise ValueError("dit-sparse attention does not return the log-sum-exp to diffusers' context parallelism")
    return state.attend(
        layer,
        query.transpose(1, 2),  # (B, h, N, D)
        key.transpose(1, 2),
        value.transpose(1, 2),
        attn_mask=attn_mask,
        scale=scale,
        # Exact attention of the local heads over the whole sequence: the layer's own backend, single-device.
        dense_fn=lambda: dispatch_attention_fn(
            query, key, value, attn_mask=attn_mask, scale=scale, backend=state.original_backend(layer)
        ).transpose(1, 2),
        head_offset=head_offset,
        total_heads=total_heads,
    ).transpose(1, 2)  # (B, N, h, D)


def _ulysses_backward_op(ctx: Any, grad_out: torch.Tensor, *args: Any) -> tuple[torch.Tensor, ...]:
    raise RuntimeError("dit-sparse attention is for inference; it has no backward pass under context parallelism")


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
    registered = _AttentionBackendRegistry._backends.get(member) is _dit_sparse_backend
    if not registered or not _AttentionBackendRegistry._is_context_parallel_available(member):
        # enable_parallelism() refuses backends that do not declare context-parallel support.
        _AttentionBackendRegistry.register(member, constraints=[], supports_context_parallel=True)(_dit_sparse_backend)
    return member


@contextlib.contextmanager
def active_backend_scope(state: SparseState, layer: int):
    """diffusers' active attention backend is dit-sparse's while ``layer``'s module runs (the ``global`` bridge);
    the backend it replaces is the layer's original, for its dense path."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    replaced = _AttentionBackendRegistry._active_backend
    member = backend_member()
    if replaced is not member:  # (re-entered: keep the original recorded by the outer scope)
        state.set_original_backend(layer, replaced)
    _AttentionBackendRegistry._active_backend = member
    try:
        yield
    finally:
        _AttentionBackendRegistry._active_backend = replaced


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
