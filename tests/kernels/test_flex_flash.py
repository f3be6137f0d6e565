"""The ``flex-flash`` backend (FlexAttention with BACKEND='FLASH') and the measured table ``auto`` consults.

The kernel itself needs a Hopper or Blackwell GPU and flash-attn-4 (``tests/kernels/test_gpu.py`` checks it
there); everything that decides whether it runs, and whether ``auto`` picks it, is checked here.
"""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

import dit_sparse as ds
from dit_sparse.kernels import BACKENDS, backend_table, flex
from dit_sparse.kernels.backend_table import (
    DEFAULT_CUDA_ORDER,
    cuda_backend_order,
    load_backend_table,
    parse_backend_table,
    table_backend,
)


def test_cpu_reason_says_it_needs_a_cuda_gpu():
    reason = ds.backend_status("cpu")["flex-flash"]
    assert reason is not None and "needs a CUDA GPU" in reason and "'cpu'" in reason
    assert "flex-flash" not in ds.list_backends("cpu")


def test_auto_never_picks_flex_flash_on_a_cpu():
    q = torch.randn(1, 2, 256, 64)
    mask = ds.BlockSparseMask.from_dense(torch.ones(1, 2, 2, 2, dtype=torch.bool).tril(), 128, (256, 256))
    assert ds.select_backend(q, mask) != "flex-flash"


@pytest.fixture
def fake_cuda(monkeypatch):
    """A visible 'GPU' whose capability, torch feature and package presence each test sets."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    state = {"capability": (9, 0), "torch_has_flash": True, "package": True}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: state["capability"])
    monkeypatch.setattr(flex, "flex_has_flash_backend", lambda: state["torch_has_flash"])
    monkeypatch.setattr(flex, "flash_attn_cute_available", lambda: state["package"])
    return state


def _cuda_reason() -> str | None:
    return flex._flex_flash_unavailable_reason.__wrapped__(0)  # uncached: each test changes the fake GPU


def test_cuda_reasons_name_the_missing_piece(fake_cuda):
    fake_cuda["torch_has_flash"] = False
    assert f"torch {torch.__version__} has no FlexAttention kernel option BACKEND='FLASH'" in _cuda_reason()
    fake_cuda["torch_has_flash"] = True
    fake_cuda["capability"] = (8, 0)
    assert "Hopper (sm_90) and Blackwell" in _cuda_reason() and "sm_80" in _cuda_reason()
    fake_cuda["capability"] = (9, 0)
    fake_cuda["package"] = False
    assert "flash-attn-4" in _cuda_reason() and "flash_attn.cute" in _cuda_reason()


def test_this_torch_has_the_flash_option():
    # The venv's torch (2.13) has it; the check must find it without importing flash_attn.
    assert flex.flex_has_flash_backend()
    assert isinstance(flex.flash_attn_cute_available(), bool)


@pytest.mark.parametrize(
    ("dtype", "D", "block", "message"),
    [
        (torch.float32, 64, 128, "runs fp16 and bf16, not torch.float32"),
        (torch.bfloat16, 60, 128, "head dim divisible by 8, got 60"),
        (torch.bfloat16, 64, 64, "mask blocks of at least 128 x 128 tokens"),
    ],
)
def test_unsupported_calls_are_refused_with_the_reason(dtype, D, block, message):
    n = 256
    q = torch.randn(1, 2, n, D, dtype=dtype)
    blocks = torch.ones(1, 2, n // block, n // block, dtype=torch.bool)
    mask = ds.BlockSparseMask.from_dense(blocks, block, (n, n))
    assert message in BACKENDS["flex-flash"].unsupported_reason(q, mask, False)
    with pytest.raises(ValueError, match="backend 'flex-flash' cannot run this call"):
        ds.block_sparse_attention(q, q, q, mask, backend="flex-flash")


def test_registry_config_and_cli_offer_it():
    from dit_sparse.bench.attention import build_parser as bench_parser
    from dit_sparse.cli.main import build_parser

    assert "flex-flash" in BACKENDS
    assert ds.SparseAttentionConfig("radial", backend="flex-flash").backend == "flex-flash"
    args = build_parser().parse_args(["generate", "--backend", "flex-flash", "--out", "x"])
    assert args.backend == "flex-flash"
    assert bench_parser().parse_args(["--backends", "triton,flex-flash"]).backends == ["triton", "flex-flash"]


# --------------------------------------------------------------------------------------------------
# the measured table
# --------------------------------------------------------------------------------------------------
ENTRY = {
    "gpu": "NVIDIA H200",
    "dtype": "bfloat16",
    "head_dim": 128,
    "backend": "flex-flash",
    "evidence": "benchmarks/results/x.json",
}


def test_shipped_table_is_empty_and_says_so():
    data = json.loads(backend_table.TABLE_PATH.read_text())
    assert data["entries"] == [] and "No entry is measured yet" in data["comment"]
    assert load_backend_table() == ()


def test_empty_table_keeps_the_built_in_order():
    assert DEFAULT_CUDA_ORDER == ("triton", "flex", "reference")
    assert cuda_backend_order("NVIDIA H200", torch.bfloat16, 128, table=[]) == DEFAULT_CUDA_ORDER


def test_an_entry_moves_its_backend_first_only_where_it_matches():
    table = parse_backend_table({"entries": [ENTRY]})
    assert table_backend("NVIDIA H200", torch.bfloat16, 128, table) == "flex-flash"
    assert cuda_backend_order("NVIDIA H200", torch.bfloat16, 128, table) == ("flex-flash", *DEFAULT_CUDA_ORDER)
    for other in (("NVIDIA H100 80GB HBM3", torch.bfloat16, 128), ("NVIDIA H200", torch.float16, 128)):
        assert cuda_backend_order(*other, table) == DEFAULT_CUDA_ORDER
    assert cuda_backend_order("NVIDIA H200", torch.bfloat16, 64, table) == DEFAULT_CUDA_ORDER
    flex_first = parse_backend_table({"entries": [ENTRY | {"backend": "flex"}]})
    assert cuda_backend_order("NVIDIA H200", torch.bfloat16, 128, flex_first) == ("flex", "triton", "reference")


def test_auto_follows_the_table_through_select_backend(monkeypatch):
    """select_backend for a (faked) CUDA call: the table's backend first, passed over when it cannot run."""
    import dit_sparse.attention as attention

    table = parse_backend_table({"entries": [ENTRY]})
    monkeypatch.setattr(attention, "cuda_device_name", lambda index: "NVIDIA H200")
    monkeypatch.setattr(
        attention, "cuda_backend_order", lambda name, dtype, D: cuda_backend_order(name, dtype, D, table)
    )
    reasons = {"flex-flash": None, "triton": None}
    for name in reasons:
        monkeypatch.setitem(
            BACKENDS,
            name,
            dataclasses.replace(
                BACKENDS[name],
                unavailable_reason=lambda device, name=name: reasons[name],
                unsupported_reason=lambda q, mask, lse: None,
            ),
        )
    q = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.bfloat16, shape=(1, 2, 256, 128))
    mask = ds.BlockSparseMask.from_dense(torch.ones(1, 2, 2, 2, dtype=torch.bool), 128, (256, 256))
    assert attention.select_backend(q, mask) == "flex-flash"
    reasons["flex-flash"] = "flash-attn-4 is not installed"
    assert attention.select_backend(q, mask) == "triton"
    q.shape = (1, 2, 256, 64)  # no entry for this head dim: the built-in order
    reasons["flex-flash"] = None
    assert attention.select_backend(q, mask) == "triton"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"entries": [ENTRY | {"speed": 2}]}, r"unknown key\(s\) \['speed'\]"),
        ({"entries": [{k: v for k, v in ENTRY.items() if k != "evidence"}]}, r"missing key\(s\) \['evidence'\]"),
        ({"entries": [ENTRY | {"backend": "fa9"}]}, "names backend 'fa9'"),
        ({"entries": [ENTRY | {"dtype": "bf16"}]}, "dtype 'bf16'; write it as torch names it"),
        ({"entries": [ENTRY | {"head_dim": "128"}]}, "head_dim '128'; expected a positive int"),
        ({"entries": [], "extra": 1}, r"unknown key\(s\) \['extra'\]"),
        ({"rows": []}, "expected an object with a list 'entries'"),
    ],
)
def test_bad_tables_are_rejected_with_what_to_fix(data, message):
    with pytest.raises(ValueError, match=message):
        parse_backend_table(data)
