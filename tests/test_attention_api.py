from __future__ import annotations

import pytest
import torch
from _helpers import exact_attention, random_blocks
from conftest import HAS_CUDA

import dit_sparse as ds


def make(B=1, H=2, N=200, D=32, dtype=torch.float32):
    q, k, v = (torch.randn(B, H, N, D, dtype=dtype) for _ in range(3))
    mask = ds.BlockSparseMask.from_dense(random_blocks(1, H, 4, 4, 0.5), 64, (N, N))
    return q, k, v, mask


def test_reference_matches_the_exact_definition_with_lse():
    q, k, v, mask = make(B=2, dtype=torch.float64)
    out, lse = ds.block_sparse_attention(q, k, v, mask, backend="reference", return_lse=True)
    expected, expected_lse = exact_attention(q, k, v, mask.token_mask())
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(lse.double(), expected_lse, atol=1e-5, rtol=1e-6)


def test_reference_empty_rows():
    blocks = torch.tensor([[[[False, False], [True, True]]]])
    mask = ds.BlockSparseMask.from_dense(blocks, 64, (128, 100), allow_empty_rows=True)
    q, k, v = torch.randn(1, 1, 128, 16), torch.randn(1, 1, 100, 16), torch.randn(1, 1, 100, 16)
    out, lse = ds.block_sparse_attention(q, k, v, mask, backend="reference", return_lse=True)
    assert torch.all(out[..., :64, :] == 0) and torch.all(lse[..., :64] == float("-inf"))
    expected, _ = exact_attention(q, k, v, mask.token_mask())
    torch.testing.assert_close(out[..., 64:, :].double(), expected[..., 64:, :], atol=1e-5, rtol=1e-5)


def test_the_first_call_of_a_kernel_signature_is_timed_apart():
    from dit_sparse.attention import first_call_seconds

    q, k, v, mask = make(N=229, D=24)  # a signature no other test uses, so this process has not called it
    before = first_call_seconds()
    ds.block_sparse_attention(q, k, v, mask, backend="reference")
    after_first = first_call_seconds()
    assert after_first > before
    ds.block_sparse_attention(q, k, v, mask, backend="reference")  # same signature: not a first call
    assert first_call_seconds() == after_first
    ds.block_sparse_attention(q, k, v, mask, backend="reference", return_lse=True)  # another signature
    assert first_call_seconds() > after_first


def test_backends_listing_and_auto():
    status = ds.backend_status("cpu")
    assert set(status) == {"reference", "gather", "flex", "flex-flash", "triton", "triton-tma"}
    assert status["reference"] is None
    assert "reference" in ds.list_backends("cpu")
    q, _, _, mask = make()
    assert ds.select_backend(q, mask) in ds.list_backends("cpu")
    assert ds.select_backend(q, mask) != "triton"  # the interpreter is never chosen by auto
    assert ds.select_backend(q, mask) == ds.select_backend(q, mask, return_lse=True) == "gather"
    assert "CPU only" in ds.backend_status("meta")["gather"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda q, k, v, m: (q[0], k, v, m), r"q must have shape \(B, H, N, D\)"),
        (lambda q, k, v, m: (q.long(), k, v, m), "q must be a floating tensor"),
        (lambda q, k, v, m: (q.half(), k, v, m), "must share a dtype"),
        (lambda q, k, v, m: (q, k, v[:, :, :100], m), "k and v must have the same shape"),
        (lambda q, k, v, m: (q[:, :1], k, v, m), "must agree on batch, heads and head dim"),
        (lambda q, k, v, m: (q, k, v, m.to_dense()), "mask must be a dit_sparse.BlockSparseMask"),
        (lambda q, k, v, m: (q[:, :, :150], k, v, m), r"mask was built for seq_len \(200, 200\)"),
        (
            lambda q, k, v, m: (
                q,
                k,
                v,
                ds.BlockSparseMask.from_dense(torch.ones(1, 3, 4, 4, dtype=torch.bool), 64, (200, 200)),
            ),
            "mask has 3 heads, q has 2",
        ),
    ],
)
def test_bad_inputs_name_the_problem(mutate, message):
    q, k, v, mask = make()
    with pytest.raises(ValueError, match=message):
        ds.block_sparse_attention(*mutate(q, k, v, mask), backend="reference")


def test_bad_batch_backend_and_fp64():
    q, k, v, _ = make(B=2)
    mask = ds.BlockSparseMask.from_dense(torch.ones(3, 2, 4, 4, dtype=torch.bool), 64, (200, 200))
    with pytest.raises(ValueError, match="mask batch must be 1 or the batch size 2"):
        ds.block_sparse_attention(q, k, v, mask)
    _, _, _, mask = make()
    with pytest.raises(ValueError, match="unknown backend 'cuda_magic'"):
        ds.block_sparse_attention(q, k, v, mask, backend="cuda_magic")
    with pytest.raises(ValueError, match=r"triton runs fp16, bf16 and fp32, not torch\.float64"):
        ds.block_sparse_attention(q.double(), k.double(), v.double(), mask, backend="triton")


@pytest.mark.skipif(HAS_CUDA, reason="checks the message on a machine without a GPU")
def test_triton_without_gpu_or_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v, mask = make()
    with pytest.raises(ValueError, match="triton kernels need a CUDA GPU"):
        ds.block_sparse_attention(q, k, v, mask, backend="triton")
