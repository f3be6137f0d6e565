"""The diffusers dispatcher bridge uses private diffusers API; these tests fail loudly when an upgrade breaks it."""

from __future__ import annotations

import warnings

import pytest
import torch
from diffusers.models.attention_dispatch import (
    AttentionBackendName,
    _AttentionBackendRegistry,
    dispatch_attention_fn,
)
from tiny_models import tiny_wan_transformer

import dit_sparse as ds
from dit_sparse.integration.bridge import BACKEND_NAME, _dit_sparse_backend, backend_member


def test_backend_is_a_member_of_the_closed_enum_and_registered():
    member = backend_member()
    assert member is backend_member()  # idempotent
    assert AttentionBackendName(BACKEND_NAME) is member
    assert isinstance(member, AttentionBackendName) and member == "dit_sparse"
    assert _AttentionBackendRegistry._backends[member] is _dit_sparse_backend
    # the dispatcher passes these keyword arguments; the backend must accept all it needs
    accepted = _AttentionBackendRegistry._supported_arg_names[member]
    assert {"query", "key", "value", "attn_mask", "scale", "_parallel_config"} <= accepted


def test_dispatch_without_an_active_layer_is_plain_sdpa():
    member = backend_member()
    q, k, v = (torch.randn(2, 37, 3, 16) for _ in range(3))  # (B, N, H, D) as diffusers passes them
    out = dispatch_attention_fn(q, k, v, backend=member)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    ).transpose(1, 2)
    torch.testing.assert_close(out, expected)


def test_other_backends_are_untouched():
    backend_member()
    assert AttentionBackendName("native") in _AttentionBackendRegistry._backends
    assert AttentionBackendName.NATIVE is not backend_member()


def test_attention_that_bypasses_dit_sparse_is_reported_not_silent():
    """set_attention_backend() after dit-sparse replaces the backend of its self-attention processors: the
    modules run, no call reaches dit-sparse, and the first such forward warns (once) instead of staying
    silently dense."""
    model = tiny_wan_transformer()
    inputs = {
        "hidden_states": torch.randn(1, 4, 3, 12, 14),
        "timestep": torch.tensor([900.0]),
        "encoder_hidden_states": torch.randn(1, 5, 32),
    }
    ds.apply_sparse_attention(model, ds.SparseAttentionConfig("radial", block_size=16, backend="reference"))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        model(**inputs)  # routed: no warning
    active = _AttentionBackendRegistry._active_backend
    try:
        model.set_attention_backend("_native_math")  # sets diffusers' global active backend too
        with torch.no_grad(), pytest.warns(RuntimeWarning, match=r"without reaching dit-sparse"):
            model(**inputs | {"timestep": torch.tensor([800.0])})
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("error")
            model(**inputs | {"timestep": torch.tensor([700.0])})  # said once
    finally:
        _AttentionBackendRegistry.set_active_backend(active)  # other tests in this process run natively
