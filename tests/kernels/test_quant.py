"""Quantized Q/K attention: per-block quantization, K smoothing, the reference twin and the Triton kernels.

The kernels (attention, and quantization itself) run under TRITON_INTERPRET=1 on a CPU (fp32, fp16; small
shapes, the interpreter is slow) and natively on a GPU (the ``gpu`` tests add bf16 and real sizes). The
quantization kernel is also compiled for sm_80 and sm_90 without a GPU, to check what it lowers to.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from _helpers import random_blocks
from conftest import HAS_CUDA, requires_cuda

import dit_sparse as ds
from dit_sparse.kernels.quant import (
    dequantize_per_block,
    lse_offset,
    quant_max,
    quantize_per_block,
    quantize_qk,
    quantize_qk_triton,
    smooth_keys,
)

DEVICE = "cuda" if HAS_CUDA else "cpu"


def loop_quantize(x, block, bits):
    """Per-block symmetric quantization written one block at a time, the obvious way."""
    qmax = 2 ** (bits - 1) - 1
    n = x.shape[-2]
    ints, scales = torch.empty(x.shape, dtype=torch.int8), []
    for start in range(0, n, block):
        chunk = x[..., start : start + block, :].float()
        scale = chunk.abs().amax(dim=(-2, -1))  # (...,)
        scale = scale * (1 / qmax)  # the library's reciprocal: a division differs in the last bit now and then
        divisor = torch.where(scale > 0, scale, torch.ones_like(scale))[..., None, None]
        ints[..., start : start + block, :] = torch.round(chunk / divisor).clamp(-qmax, qmax).to(torch.int8)
        scales.append(scale)
    return ints, torch.stack(scales, dim=-1)


def quantized_exact(q, k, v, mask, quant, scale=None):
    """fp64 attention on the dequantized Q and smoothed K (the library's integers): what the twin and the
    kernel approximate in their dtypes. Empty rows give zeros and LSE -inf."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    quantized = quantize_qk(q, k, mask.block_size, quant)
    bq, bk = mask.block_size
    q_deq = dequantize_per_block(quantized.q, quantized.q_scale, bq, torch.float64)
    k_deq = dequantize_per_block(quantized.k, quantized.k_scale, bk, torch.float64)
    scores = (q_deq @ k_deq.transpose(-2, -1)) * scale  # (B, H, Nq, Nk)
    scores = scores.masked_fill(~mask.token_mask(), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, Nq)
    probs = torch.exp(scores - lse[..., None]).nan_to_num(0.0)
    lse = lse + (q.double() @ quantized.k_mean.double().transpose(-2, -1)).squeeze(-1) * scale
    return probs @ v.double(), lse


def make_inputs(B, H, Nq, Nk, D, dtype, offset=0.0):
    q = torch.randn(B, H, Nq, D, device=DEVICE)
    k = torch.randn(B, H, Nk, D, device=DEVICE) + offset * torch.randn(D, device=DEVICE)
    v = torch.randn(B, H, Nk, D, device=DEVICE)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def relative_l2(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# --------------------------------------------------------------------------------------------------
# quantize / dequantize
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_quantize_bounds_and_the_loop_definition(bits, dtype):
    x = (torch.randn(2, 3, 150, 24) * torch.rand(2, 3, 150, 1) * 5).to(dtype)  # N not a multiple of 64
    x[0, 1, 64:128] = 0  # one all-zero block
    x_int, scales = quantize_per_block(x, 64, bits)
    qmax = quant_max(bits)
    assert x_int.dtype == torch.int8 and x_int.shape == x.shape
    assert scales.dtype == torch.float32 and scales.shape == (2, 3, 3)
    assert int(x_int.abs().max()) == qmax
    # every non-zero block reaches the end of the range: the scale is its own max / qmax
    block_max = torch.stack([x_int[..., s : s + 64, :].abs().amax(dim=(-2, -1)) for s in (0, 64, 128)], -1)
    assert torch.equal(block_max[scales > 0], torch.full_like(block_max[scales > 0], qmax))
    deq = dequantize_per_block(x_int, scales, 64)
    per_token_scale = scales.repeat_interleave(64, dim=-1)[..., :150, None]
    assert bool(((x.float() - deq).abs() <= per_token_scale / 2 * (1 + 1e-6)).all())
    # the zero block: scale 0, integers 0, exact zeros back
    assert scales[0, 1, 1] == 0 and not x_int[0, 1, 64:128].any() and not deq[0, 1, 64:128].any()
    ints, loop_scales = loop_quantize(x, 64, bits)
    assert torch.equal(x_int, ints) and torch.equal(scales, loop_scales)


def test_quantize_rejects_bad_arguments():
    x = torch.randn(1, 1, 10, 4)
    with pytest.raises(ValueError, match="bits must be 8 or 4, got 3"):
        quantize_per_block(x, 16, 3)
    with pytest.raises(ValueError, match="block must be a positive int"):
        quantize_per_block(x, 0, 8)
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(..., N, D\)"):
        quantize_per_block(torch.randn(5), 16, 8)
    x_int, scales = quantize_per_block(x, 4, 8)
    with pytest.raises(ValueError, match=r"scales must have shape \(1, 1, 3\)"):
        dequantize_per_block(x_int, scales[..., :2], 4)


# --------------------------------------------------------------------------------------------------
# smoothing
# --------------------------------------------------------------------------------------------------
def test_smoothing_removes_a_common_channel_offset():
    q, k, v = make_inputs(1, 2, 200, 200, 32, torch.float32)
    offset = 40.0 * torch.randn(32, device=DEVICE)  # the same for every key: exact attention cannot see it
    smoothed, mean = smooth_keys(k)
    smoothed_offset, mean_offset = smooth_keys(k + offset)
    torch.testing.assert_close(smoothed_offset, smoothed, atol=1e-4, rtol=0)
    torch.testing.assert_close(mean_offset - mean, offset.expand_as(mean), atol=1e-4, rtol=0)
    assert smoothed.mean(dim=-2).abs().max() < 1e-5

    mask = ds.BlockSparseMask.from_dense(random_blocks(1, 2, 4, 4, 0.5).to(DEVICE), 64, (200, 200))
    exact = ds.block_sparse_attention(q.double(), k.double(), v.double(), mask, backend="reference")
    plain = ds.block_sparse_attention(q, k, v, mask, backend="reference", quant="int8")
    shifted, lse = ds.block_sparse_attention(q, k + offset, v, mask, backend="reference", quant="int8", return_lse=True)
    # The offset costs nothing: the same error as without it, and a small one.
    assert relative_l2(shifted, exact) < 1.05 * relative_l2(plain, exact) + 1e-6
    assert relative_l2(shifted, exact) < 0.02
    # Without smoothing it would: the offset takes the int8 range and the scores' detail is lost.
    scale = 1 / math.sqrt(32)
    q_deq = dequantize_per_block(*quantize_per_block(q, 64, 8), 64, torch.float64)
    k_deq = dequantize_per_block(*quantize_per_block(k + offset, 64, 8), 64, torch.float64)
    scores = (q_deq @ k_deq.transpose(-2, -1) * scale).masked_fill(~mask.token_mask(), float("-inf"))
    unsmoothed = torch.softmax(scores, dim=-1) @ v.double()
    assert relative_l2(unsmoothed, exact) > 5 * relative_l2(shifted, exact)
    # The LSE is that of the unsmoothed scores: smoothing's per-row shift is added back.
    _, exact_lse = ds.block_sparse_attention(
        q.double(), (k + offset).double(), v.double(), mask, backend="reference", return_lse=True
    )
    torch.testing.assert_close(lse, exact_lse, atol=0.05, rtol=0)


def test_lse_offset_is_the_per_row_shift():
    q, k, _ = make_inputs(2, 2, 30, 40, 8, torch.float32)
    _, mean = smooth_keys(k)
    scores = q.double() @ k.double().transpose(-2, -1) * 0.5
    smoothed = q.double() @ (k.double() - mean.double()).transpose(-2, -1) * 0.5
    shift = lse_offset(q, mean, 0.5)
    assert shift.shape == (2, 2, 30) and shift.dtype == torch.float32
    torch.testing.assert_close((scores - smoothed)[..., 0], shift.double(), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# the reference twin
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_twin_matches_the_dequantized_definition(quant):
    q, k, v = make_inputs(2, 2, 150, 190, 16, torch.float32, offset=3.0)
    mask = ds.BlockSparseMask.from_dense(random_blocks(2, 2, 3, 3, 0.5).to(DEVICE), (64, 64), (150, 190))
    out, lse = ds.block_sparse_attention(q, k, v, mask, backend="reference", quant=quant, return_lse=True, scale=0.2)
    expected, expected_lse = quantized_exact(q, k, v, mask, quant, scale=0.2)
    torch.testing.assert_close(out.double(), expected, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(lse.double(), expected_lse, atol=1e-5, rtol=1e-5)
    # and the quantized integers are those of the loop definition, K smoothed first
    quantized = quantize_qk(q, k, mask.block_size, quant)
    bits = {"int8": 8, "int4": 4}[quant]
    assert torch.equal(quantized.q, loop_quantize(q, 64, bits)[0])
    assert torch.equal(quantized.k, loop_quantize(k - k.mean(dim=-2, keepdim=True), 64, bits)[0])


def test_twin_fp16_empty_rows_and_quantization_error():
    q, k, v = make_inputs(1, 2, 128, 128, 32, torch.float16)
    blocks = torch.tensor([[True, False], [False, False]]).expand(1, 2, 2, 2)
    mask = ds.BlockSparseMask.from_dense(blocks.to(DEVICE), 64, (128, 128), allow_empty_rows=True)
    out, lse = ds.block_sparse_attention(q, k, v, mask, backend="reference", quant="int8", return_lse=True)
    assert out.dtype == torch.float16
    assert torch.all(out[..., 64:, :] == 0) and torch.all(lse[..., 64:] == float("-inf"))
    expected, _ = quantized_exact(q, k, v, mask, "int8")
    torch.testing.assert_close(out[..., :64, :].double(), expected[..., :64, :], atol=2e-3, rtol=0)
    # int4 is coarser than int8: the quantization error against exact attention grows
    exact = ds.block_sparse_attention(q.double(), k.double(), v.double(), mask, backend="reference")
    int4 = ds.block_sparse_attention(q, k, v, mask, backend="reference", quant="int4")
    assert relative_l2(out, exact) < 0.02 < relative_l2(int4, exact) < 0.5


# --------------------------------------------------------------------------------------------------
# the Triton kernel against the twin
# --------------------------------------------------------------------------------------------------
def assert_kernel_matches_twin(q, k, v, mask, quant, *, scale=None):
    """Tolerance rule of STYLE.md, with the quantized problem's fp64 answer as the truth."""
    out, lse = ds.block_sparse_attention(q, k, v, mask, backend="triton", quant=quant, return_lse=True, scale=scale)
    twin, twin_lse = ds.block_sparse_attention(
        q, k, v, mask, backend="reference", quant=quant, return_lse=True, scale=scale
    )
    expected, _ = quantized_exact(q, k, v, mask, quant, scale)
    assert out.shape == q.shape and out.dtype == q.dtype
    atol = {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-3}[q.dtype]
    err = (out.double() - expected).abs().max().item()
    twin_err = (twin.double() - expected).abs().max().item()
    assert err <= 2 * twin_err + atol, f"kernel error {err:.3e} vs twin ({q.dtype}) error {twin_err:.3e}"
    finite = torch.isfinite(twin_lse)
    assert torch.equal(torch.isfinite(lse), finite)
    torch.testing.assert_close(lse[finite], twin_lse[finite], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize(
    ("dtype", "quant", "block"),
    [
        (torch.float32, "int8", (64, 64)),
        (torch.float16, "int8", (128, 64)),
        (torch.float32, "int4", (64, 128)),
        (torch.float16, "int4", (64, 64)),
    ],
)
def test_triton_matches_twin(dtype, quant, block):
    n, H = 150, 2  # not a multiple of any block; one mask per sample, per-head tables
    bq, bk = block
    blocks = random_blocks(2, H, math.ceil(n / bq), math.ceil(n / bk), 0.5)
    mask = ds.BlockSparseMask.from_dense(blocks.to(DEVICE), block, (n, n))
    q, k, v = make_inputs(2, H, n, n, 32, dtype, offset=2.0)
    assert_kernel_matches_twin(q, k, v, mask, quant)


def test_triton_small_head_dim_cross_lengths_broadcast_mask_and_empty_rows():
    nq, nk = 70, 100  # head dim 16 is padded to the int8 dot's minimum of 32 inside the kernel
    blocks = torch.tensor([[[True, False], [False, False]], [[False, True], [True, True]]])[None]  # (1, 2, 2, 2)
    mask = ds.BlockSparseMask.from_dense(blocks.to(DEVICE), 64, (nq, nk), allow_empty_rows=True)
    q, _, _ = make_inputs(2, 2, nq, nk, 16, torch.float32)
    _, k, v = make_inputs(2, 2, nk, nk, 16, torch.float32, offset=5.0)
    q = q.transpose(1, 2).contiguous().transpose(1, 2)  # strided, as a diffusers processor holds it
    assert_kernel_matches_twin(q, k, v, mask, "int8", scale=0.3)
    out = ds.block_sparse_attention(q, k, v, mask, backend="triton", quant="int8")
    assert torch.all(out[:, 0, 64:] == 0)


def test_torch_compile_traces_the_quantized_op():
    mask = ds.BlockSparseMask.from_dense(random_blocks(1, 2, 2, 2, 0.5).to(DEVICE), 64, (128, 128))
    q, k, v = make_inputs(1, 2, 128, 128, 32, torch.float32)

    def layer(q, k, v):
        return ds.block_sparse_attention(q * 2.0, k, v, mask, backend="triton", quant="int8") + 1.0

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v), layer(q, k, v))


@pytest.mark.skipif(HAS_CUDA, reason="checks the CPU-only interpreter guard")
def test_bf16_is_refused_under_the_interpreter_with_quant():
    mask = ds.BlockSparseMask.from_dense(torch.ones(1, 1, 1, 1, dtype=torch.bool), 64, (64, 64))
    q = torch.randn(1, 1, 64, 32, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bf16 is silently wrong under the Triton interpreter"):
        ds.block_sparse_attention(q, q, q, mask, backend="triton", quant="int8")


def test_the_op_checks_quantized_inputs():
    from dit_sparse.kernels.triton_block_sparse import _check_quantized

    q_int, k_int = torch.zeros(1, 2, 100, 32, dtype=torch.int8), torch.zeros(1, 2, 80, 32, dtype=torch.int8)
    good_q, good_k = torch.ones(1, 2, 2), torch.ones(1, 2, 2)
    _check_quantized(q_int, k_int, good_q, good_k, 64, 64)
    with pytest.raises(ValueError, match="quantized attention needs int8 q and k"):
        _check_quantized(q_int.float(), k_int, good_q, good_k, 64, 64)
    with pytest.raises(ValueError, match=r"k_scale must be float32 of shape \(1, 2, 3\)"):
        _check_quantized(q_int, k_int, good_q, good_k, 64, 32)
    with pytest.raises(ValueError, match="q_scale must be contiguous in its last dim"):
        _check_quantized(q_int, k_int, torch.ones(1, 2, 2, 2)[..., 0], good_k, 64, 64)


# --------------------------------------------------------------------------------------------------
# the Triton quantization kernel against its twin, quantize_qk: bit for bit
# --------------------------------------------------------------------------------------------------
def assert_same_quantization(actual, expected):
    for field in ("q", "q_scale", "k", "k_scale", "k_mean"):
        a, e = getattr(actual, field), getattr(expected, field)
        assert a.shape == e.shape and a.dtype == e.dtype, f"{field}: {a.dtype} {a.shape} vs {e.dtype} {e.shape}"
        assert torch.equal(a, e), f"{field}: {int((a != e).sum())} of {a.numel()} differ"
    assert actual.block_size == expected.block_size


@pytest.mark.parametrize(
    ("dtype", "D", "block", "quant"),
    [
        (torch.float32, 64, (64, 128), "int8"),
        (torch.float16, 80, (128, 64), "int4"),
        (torch.float16, 128, (64, 64), "int8"),
        (torch.float32, 128, (128, 128), "int4"),
    ],
)
def test_triton_quantize_qk_matches_the_twin_bit_for_bit(dtype, D, block, quant):
    # N not a multiple of any block; inputs as a diffusers processor holds them, (B, N, H, D) seen as
    # (B, H, N, D); a channel offset in K for smoothing to remove; a zero Q block and a zero K head.
    B, H = 2, 2
    q = (torch.randn(B, 150, H, D, device=DEVICE) * 3).to(dtype).transpose(1, 2)
    k = (torch.randn(B, 190, H, D, device=DEVICE) + 4 * torch.randn(D, device=DEVICE)).to(dtype).transpose(1, 2)
    q[1, 0, block[0] : 2 * block[0]] = 0
    k[1, 1] = 0
    fused = quantize_qk_triton(q, k, block, quant)
    twin = quantize_qk(q, k, block, quant)
    assert_same_quantization(fused, twin)
    assert fused.q_scale[1, 0, 1] == 0 and not fused.k_scale[1, 1].any()  # the zero blocks got scale 0
    assert fused.q.is_contiguous() and fused.k.is_contiguous()


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_triton_quantize_rounds_half_to_even_like_torch(quant):
    # A block whose max is qmax has scale exactly 1 (qmax times fp32 1/qmax rounds to 1 for 7 and 127), so
    # x / scale lands exactly on the halves: round-half-away-from-zero or floor(x + 0.5) would differ here.
    qmax = quant_max({"int8": 8, "int4": 4}[quant])
    halves = torch.arange(-qmax, qmax) + 0.5  # -6.5 ... 6.5 for int4
    q = torch.cat([halves, torch.tensor([float(qmax)])]).repeat(4, 1)[None, None]  # (1, 1, 4, 2 qmax + 1)
    quantized = quantize_qk_triton(q, q, (4, 4), quant)
    assert torch.equal(quantized.q_scale, torch.ones(1, 1, 1))
    assert quantized.q[0, 0, 0, :-1].tolist() == torch.round(halves).tolist()
    assert quantized.q[0, 0, 0, qmax - 3 : qmax + 3].tolist() == [-2, -2, 0, 0, 2, 2]  # -2.5 ... 2.5
    assert_same_quantization(quantized, quantize_qk(q, q, (4, 4), quant))


@pytest.mark.parametrize(("block", "D"), [(256, 256), (48, 16)])
def test_triton_quantize_large_and_odd_blocks(block, D):
    # 256 x 256 is read in chunks of rows (max first, then quantize); 48 is no power of two
    q, k, _ = make_inputs(1, 2, 300, 300, D, torch.float32, offset=3.0)
    assert_same_quantization(
        quantize_qk_triton(q, k, (block, block), "int8"), quantize_qk(q, k, (block, block), "int8")
    )


def test_triton_quantize_traces_under_torch_compile():
    q, k, _ = make_inputs(1, 2, 100, 90, 32, torch.float32)

    def scales(q, k):
        quantized = quantize_qk_triton(q * 2.0, k, (64, 64), "int8")
        return quantized.q_scale + 1.0, quantized.k

    compiled = torch.compile(scales, fullgraph=True, backend="aot_eager")
    for got, expected in zip(compiled(q, k), scales(q, k), strict=True):
        assert torch.equal(got, expected)


def test_triton_quantize_rejects_bad_inputs(monkeypatch):
    q = torch.randn(1, 2, 64, 32, device=DEVICE)
    with pytest.raises(ValueError, match="quant must be 'int8' or 'int4' to quantize, got None"):
        quantize_qk_triton(q, q, (64, 64), None)
    with pytest.raises(ValueError, match="quant must be None, 'int8' or 'int4', got 'int2'"):
        quantize_qk_triton(q, q, (64, 64), "int2")
    with pytest.raises(ValueError, match=r"block_size must be a \(bq, bk\) tuple, got 64"):
        quantize_qk_triton(q, q, 64, "int8")
    with pytest.raises(ValueError, match="block must be a positive int"):
        quantize_qk_triton(q, q, (64, 0), "int8")
    with pytest.raises(ValueError, match=r"q and k must be \(B, H, N, D\) with matching B, H, D"):
        quantize_qk_triton(q, q[..., :16], (64, 64), "int8")
    with pytest.raises(ValueError, match=r"q and k must be \(B, H, N, D\) with matching B, H, D"):
        quantize_qk_triton(q[0], q[0], (64, 64), "int8")
    with pytest.raises(ValueError, match=r"triton quantization takes fp16, bf16 or fp32 k, got torch\.float64"):
        quantize_qk_triton(q, q.double(), (64, 64), "int8")
    cpu = torch.randn(1, 2, 64, 32)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="triton quantization cannot run on cpu: triton kernels need a CUDA GPU"):
        quantize_qk_triton(cpu, cpu, (64, 64), "int8")


@pytest.mark.skipif(HAS_CUDA, reason="checks the CPU-only interpreter guard")
def test_triton_quantize_refuses_bf16_under_the_interpreter():
    q = torch.randn(1, 1, 64, 32)
    with pytest.raises(ValueError, match="bf16 is silently wrong under the Triton interpreter"):
        quantize_qk_triton(q, q.bfloat16(), (64, 64), "int8")


def _nvidia_backend_missing() -> str | None:
    try:
        from triton.backends import backends
    except ImportError:
        return "triton is not installed"
    return None if "nvidia" in backends else "this triton has no nvidia backend to compile for"


# Run in a fresh process: under TRITON_INTERPRET=1 (set by conftest on a CPU) triton.language's own jit
# helpers (tl.max, ...) are interpreter objects, and compiling a kernel for a GPU fails on them.
_COMPILE_FOR_GPUS = """
import json, triton
from triton.backends.compiler import GPUTarget
from dit_sparse.kernels.quant import _quantize_kernel, _quantize_launch_config

kernel = _quantize_kernel()
config = _quantize_launch_config(128, 128)
num_warps = config.pop("num_warps")
constexprs = dict(QMAX=127, MASK_BLOCK=128, SMOOTH=True, **config)
ptx = {}
for arch in (80, 90):
    for dtype in ("fp16", "bf16"):
        signature = {name: "i32" for name in kernel.arg_names}  # strides, sizes
        signature.update(X="*" + dtype, MEAN="*fp32", X_INT="*i8", SCALE="*fp32", inv_qmax="fp32")
        signature.update(dict.fromkeys(("stride_xb", "stride_xh", "stride_xn"), "i64"))
        signature.update(dict.fromkeys(constexprs, "constexpr"))
        source = triton.compiler.ASTSource(kernel, signature, constexprs=constexprs)
        target = GPUTarget("cuda", arch, 32)
        ptx[f"sm_{arch} {dtype}"] = triton.compile(source, target=target, options={"num_warps": num_warps}).asm["ptx"]
print(json.dumps(ptx))
"""


@pytest.mark.skipif(_nvidia_backend_missing() is not None, reason=str(_nvidia_backend_missing()))
def test_triton_quantize_compiles_for_sm80_and_sm90():
    """Compiled for real GPU targets (fp16 and bf16 inputs) without a GPU: the divisions are IEEE, as the
    twin's, and the rounding is not folded away."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, "-c", _COMPILE_FOR_GPUS], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ptx = json.loads(run.stdout.strip().splitlines()[-1])
    assert sorted(ptx) == ["sm_80 bf16", "sm_80 fp16", "sm_90 bf16", "sm_90 fp16"]
    for target, code in ptx.items():
        # Triton's `/` would be div.full.f32 (approximate); the twin's division is IEEE, div.rn
        assert "div.rn.f32" in code and "div.full.f32" not in code and "div.approx" not in code, target
        # x + 1.5 * 2**23 - 1.5 * 2**23 survives as two adds
        assert "0f4B400000" in code and "0fCB400000" in code, target
        assert ("cvt.f32.bf16" if "bf16" in target else "cvt.f32.f16") in code, target


# --------------------------------------------------------------------------------------------------
# the public entry: choices and errors
# --------------------------------------------------------------------------------------------------
def test_auto_picks_a_quantized_backend():
    q, k, v = make_inputs(1, 2, 64, 64, 16, torch.float32)
    mask = ds.BlockSparseMask.from_dense(torch.ones(1, 2, 1, 1, dtype=torch.bool, device=DEVICE), 64, (64, 64))
    assert ds.select_backend(q, mask, quant="int8") == ("triton" if HAS_CUDA else "reference")
    out = ds.block_sparse_attention(q, k, v, mask, quant="int4")
    twin = ds.block_sparse_attention(q, k, v, mask, backend="reference", quant="int4")
    torch.testing.assert_close(out, twin, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(backend="flex", quant="int8"), r"backend 'flex' has no quantized attention .*\['reference', 'triton'\]"),
        (dict(quant="int2"), "quant must be None, 'int8' or 'int4', got 'int2'"),
        (dict(quant=8), "quant must be None, 'int8' or 'int4', got 8"),
    ],
)
def test_bad_quant_calls_name_the_problem(kwargs, message):
    q = torch.randn(1, 1, 64, 16)
    mask = ds.BlockSparseMask.from_dense(torch.ones(1, 1, 1, 1, dtype=torch.bool), 64, (64, 64))
    with pytest.raises(ValueError, match=message):
        ds.block_sparse_attention(q, q, q, mask, **kwargs)


# --------------------------------------------------------------------------------------------------
# GPU: bf16 and real sizes
# --------------------------------------------------------------------------------------------------
@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("D", [64, 128])
def test_gpu_triton_matches_twin(dtype, D):
    n, H = 4000, 4
    mask = ds.BlockSparseMask.from_dense(random_blocks(1, H, 32, 32, 0.2).cuda(), 128, (n, n))
    q, k, v = make_inputs(2, H, n, n, D, dtype, offset=3.0)
    assert_kernel_matches_twin(q, k, v, mask, "int8")


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gpu_triton_quantize_matches_the_twin_bit_for_bit(dtype):
    B, H, n, D = 2, 8, 4000, 128
    q = torch.randn(B, n, H, D, device="cuda").to(dtype).transpose(1, 2)
    k = (torch.randn(B, n, H, D, device="cuda") + 3 * torch.randn(D, device="cuda")).to(dtype).transpose(1, 2)
    for block in ((128, 128), (64, 128)):
        for quant in ("int8", "int4"):
            assert_same_quantization(quantize_qk_triton(q, k, block, quant), quantize_qk(q, k, block, quant))
