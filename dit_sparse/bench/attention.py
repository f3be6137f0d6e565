"""Attention benchmark: block-sparse backends against dense attention measured in the same run.

For each sequence length ``N`` and head dim ``D`` the benchmark times dense
``torch.nn.functional.scaled_dot_product_attention`` (the "dense SDPA" baseline) and, on a CUDA GPU,
SDPA forced to FlashAttention and to cuDNN and xformers' ``memory_efficient_attention`` where they run;
the fastest of these is the "best dense" baseline. It then times :func:`dit_sparse.block_sparse_attention`
for every backend and mask density on the same ``q, k, v``, with random block masks that keep the
requested fraction of kv blocks in every q-block row (see :func:`random_block_mask`).

With ``quant`` (``--quant int8``), every backend that has quantized attention gets extra rows at the same
mask: the whole call with ``quant=...`` (Q/K quantization in PyTorch included), and for ``triton`` also the
kernel alone on Q/K quantized beforehand ("pre-quantized"), so a GPU run shows the int8 kernel against the
fp16/bf16 one and what the quantization step costs.

Timing: CUDA events around each call (synchronized) on a GPU, ``time.perf_counter`` on a CPU. Each case
makes one untimed call first (it checks that the backend takes the call and compiles FlexAttention for
the shape), then ``warmup`` untimed calls, and reports the median of ``repeats`` timed calls.

Each result is a flat dict (a row), ready for JSON; see :func:`run_attention_benchmark`. The script
``benchmarks/attention.py`` and :func:`main` are the command line.

Example:
    >>> from dit_sparse.bench.attention import run_attention_benchmark, format_table
    >>> rows = run_attention_benchmark(
    ...     device="cpu", seq_lens=[256], head_dims=[32], heads=2, densities=[1.0, 0.5],
    ...     backends=["reference"], block_size=(64, 64), warmup=0, repeats=1, progress=False,
    ... )
    >>> sorted({row["backend"] for row in rows})
    ['reference', 'sdpa']
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import platform
import statistics
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..attention import backend_status, block_sparse_attention, list_backends
from ..kernels import BACKENDS
from ..kernels.quant import QUANT_MODES
from ..mask import SUPPORTED_BLOCK_SIZES, BlockSparseMask
from ..utils import median_ms, package_version

logger = logging.getLogger(__name__)

DEFAULT_DENSITIES = (1.0, 0.5, 0.25, 0.10, 0.05)
# The reference backend expands the block map into an N x N token mask and SDPA then works on N x N
# floats; beyond this estimate it is skipped (it is the correctness twin, not a contender).
DEFAULT_MAX_REFERENCE_BYTES = 4 * 2**30

_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


# --------------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------------
def random_block_mask(
    batch: int,
    heads: int,
    seq_len: int | tuple[int, int],
    density: float,
    block_size: int | tuple[int, int] = (128, 128),
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> BlockSparseMask:
    """Random block mask in which every q-block row keeps the same number of kv blocks.

    Each row keeps exactly ``max(1, round(density * nK))`` kv blocks chosen uniformly at random, always
    including the diagonal block ``min(i, nK - 1)``, so every head has the requested density up to
    rounding to whole blocks (and up to a partial last block). ``density=1.0`` keeps every block.

    Args:
        batch (`int`): mask batch size (1 broadcasts over the attention batch).
        heads (`int`): number of heads.
        seq_len (`int` or `(int, int)`): tokens ``N`` or ``(Nq, Nk)``.
        density (`float`): fraction of kv blocks kept per row, in ``(0, 1]``.
        block_size (`int` or `(int, int)`, defaults to ``(128, 128)``): tokens per q block and kv block.
        generator (`torch.Generator`, optional): source of randomness; the block map is drawn on its device.
        device (`torch.device` or `str`, defaults to ``"cpu"``): device of the returned mask.

    Returns:
        A :class:`~dit_sparse.BlockSparseMask` named ``random(density=...)``.
    """
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1:
        raise ValueError(f"density must be a fraction in (0, 1], got {density!r}")
    nq, nk = (seq_len, seq_len) if isinstance(seq_len, int) else tuple(seq_len)
    bq, bk = (block_size, block_size) if isinstance(block_size, int) else tuple(block_size)
    if nq < 1 or nk < 1:
        raise ValueError(f"seq_len must be positive, got {(nq, nk)}")
    n_q_blocks, n_kv_blocks = math.ceil(nq / bq), math.ceil(nk / bk)
    keep = min(n_kv_blocks, max(1, round(density * n_kv_blocks)))
    draw_device = generator.device if generator is not None else torch.device("cpu")
    scores = torch.rand(batch, heads, n_q_blocks, n_kv_blocks, generator=generator, device=draw_device)
    rows = torch.arange(n_q_blocks, device=draw_device)
    diagonal = rows.clamp(max=n_kv_blocks - 1)  # (nQ,)
    # Scores lie in [0, 1), so 2 puts the diagonal block among every row's top-k.
    scores[..., rows, diagonal] = 2.0
    chosen = scores.topk(keep, dim=-1).indices  # (B, H, nQ, keep)
    blocks = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, chosen, True)  # (B, H, nQ, nK)
    return BlockSparseMask.from_dense(
        blocks.to(device), (bq, bk), (nq, nk), name=f"random(density={density:g}, block_size={(bq, bk)})"
    )


# --------------------------------------------------------------------------------------------------
# settings and environment
# --------------------------------------------------------------------------------------------------
def _resolve_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.").lower()
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def default_backends(device: torch.device | str | None = None) -> list[str]:
    """Backends available on ``device`` (Triton on a CPU excepted: its interpreter is for tests), then ``auto``."""
    device = _resolve_device(device)
    return [name for name in list_backends(device) if not (name == "triton" and device.type == "cpu")] + ["auto"]


def default_settings(device: torch.device | str | None = None) -> dict[str, Any]:
    """Benchmark settings for ``device``; the keys are :func:`run_attention_benchmark`'s keyword arguments.

    On a CPU: N in (2048, 8192), D 64, 4 heads, fp32, 3 repeats (minutes on two cores, mostly
    FlexAttention compilation). On a CUDA GPU: N in (4096, 16384, 32760, 75600) (the last two are the
    token counts of common video DiT resolutions), D in (64, 128), 12 heads, bf16, 10 repeats.
    All values are JSON-serializable.
    """
    device = _resolve_device(device)
    common = {
        "device": str(device),
        "batch": 1,
        "block_size": (128, 128),
        "densities": list(DEFAULT_DENSITIES),
        "backends": default_backends(device),
        "max_reference_bytes": DEFAULT_MAX_REFERENCE_BYTES,
        "seed": 0,
        "quant": [],
        "lse": False,
    }
    if device.type == "cuda":
        return {
            **common,
            "seq_lens": [4096, 16384, 32760, 75600],
            "head_dims": [64, 128],
            "heads": 12,
            "dtype": "bfloat16",
            "warmup": 3,
            "repeats": 10,
        }
    return {
        **common,
        "seq_lens": [2048, 8192],
        "head_dims": [64],
        "heads": 4,
        "dtype": "float32",
        "warmup": 1,
        "repeats": 3,
    }


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _git_commit() -> tuple[str | None, bool | None]:
    """(commit, working tree has changes) of the checkout this module lives in; (None, None) outside git."""
    cwd = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
        if head.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return head.stdout.strip(), dirty


def environment_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """What a benchmark result depends on: date, package versions, device, threads and git commit.

    Args:
        device (`torch.device` or `str`, optional): the benchmarked device; defaults to CUDA if present.

    Returns:
        A JSON-serializable dict. Versions are ``None`` for packages that are not installed, and
        ``git_commit`` is ``None`` when ``git rev-parse HEAD`` fails (no git, or no commit yet).
    """
    device = _resolve_device(device)
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        cuda_capability: str | None = f"{major}.{minor}"
    else:
        device_name = _cpu_name()
        cuda_capability = None
    commit, dirty = _git_commit()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": package_version("torch"),
        "triton": package_version("triton"),
        "diffusers": package_version("diffusers"),
        "xformers": package_version("xformers"),
        "dit_sparse": package_version("dit-sparse"),
        "torch_cuda": torch.version.cuda,
        "device": str(device),
        "device_name": device_name,
        "cuda_capability": cuda_capability,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "backend_status": backend_status(device),
        "git_commit": commit,
        "git_dirty": dirty,
    }


# --------------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------------
def _time_paired_ms(
    fn: Callable[[], Any], baseline: Callable[[], Any], device: torch.device, warmup: int, repeats: int
) -> tuple[float, float, float]:
    """``fn`` and ``baseline`` timed alternately: (median ms of fn, median ms of baseline, median ratio).

    The ratio is ``baseline / fn`` per adjacent pair, so a machine whose speed drifts during the run (a
    shared VM does) moves both sides of each ratio together.
    """
    for _ in range(warmup):
        fn()
        baseline()
    pairs = [(median_ms(fn, device, 0, 1), median_ms(baseline, device, 0, 1)) for _ in range(repeats)]
    return (
        statistics.median(p[0] for p in pairs),
        statistics.median(p[1] for p in pairs),
        statistics.median(p[1] / p[0] for p in pairs),
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()


def _free_cuda(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _dense_candidates(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> Iterator[tuple[str, Callable[[], Any] | None, Callable[[], contextlib.AbstractContextManager], str | None]]:
    """(name, call, context to run it in, reason it cannot run) for each dense baseline on ``q``'s device."""
    sdpa = lambda: F.scaled_dot_product_attention(q, k, v)  # (B, H, N, D)
    yield "sdpa", sdpa, contextlib.nullcontext, None
    if q.device.type != "cuda":
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    yield "sdpa_flash", sdpa, lambda: sdpa_kernel(SDPBackend.FLASH_ATTENTION), None
    yield "sdpa_cudnn", sdpa, lambda: sdpa_kernel(SDPBackend.CUDNN_ATTENTION), None
    try:
        import xformers.ops as xops
    except ImportError as error:
        yield "xformers", None, contextlib.nullcontext, f"xformers does not import ({_first_line(error)})"
        return
    # xformers takes (B, N, H, D); the transposes are made once, outside the timed call.
    q_x, k_x, v_x = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # (B, N, H, D)
    yield "xformers", lambda: xops.memory_efficient_attention(q_x, k_x, v_x), contextlib.nullcontext, None


def _reference_bytes(mask_batch: int, batch: int, heads: int, seq_len: int, itemsize: int) -> int:
    """Estimate of the reference backend's N x N memory: the bool token mask, its float copy and scores."""
    return mask_batch * heads * seq_len * seq_len * (1 + itemsize) + batch * heads * seq_len * seq_len * itemsize


# --------------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------------
def _result_row(
    case: dict[str, Any],
    *,
    kind: str,
    backend: str,
    density_requested: float,
    density: float | None,
    ms: float | None,
    skipped: str | None,
) -> dict[str, Any]:
    """One result; speedups and throughput are filled in by :func:`_add_baselines`."""
    return {
        "kind": kind,
        "backend": backend,
        **case,
        "density_requested": density_requested,
        "density": density,
        "ms": ms,
        "quant": None,
        "prequantized": False,
        "speedup_vs_unquantized": None,
        "dense_sdpa_ms": None,
        "paired_sdpa_ms": None,
        "best_dense_ms": None,
        "best_dense_name": None,
        "speedup_vs_sdpa": None,
        "speedup_vs_best_dense": None,
        "ideal_speedup": None if density is None else 1.0 / density,
        "efficiency": None,
        "tflops_dense_equivalent": None,
        "tflops_actual": None,
        "skipped": skipped,
    }


def _add_baselines(rows: list[dict[str, Any]], sdpa_ms: float | None, best: tuple[str, float] | None) -> None:
    for row in rows:
        row["dense_sdpa_ms"] = sdpa_ms
        row["best_dense_name"], row["best_dense_ms"] = best if best is not None else (None, None)
        ms = row["ms"]
        if ms is None:
            continue
        if row.get("speedup_vs_sdpa") is None and sdpa_ms is not None:  # dense rows: not paired
            row["speedup_vs_sdpa"] = sdpa_ms / ms
        if row["speedup_vs_sdpa"] is not None:
            row["efficiency"] = row["speedup_vs_sdpa"] / row["ideal_speedup"]
        if best is not None:
            row["speedup_vs_best_dense"] = best[1] / ms
        B, H, N, D = row["batch"], row["heads"], row["seq_len"], row["head_dim"]
        # QK^T and PV: 2 * N * N * D multiply-adds each, per (batch, head).
        dense_flops = 4 * B * H * N * N * D
        row["tflops_dense_equivalent"] = dense_flops / (ms * 1e-3) / 1e12
        row["tflops_actual"] = row["tflops_dense_equivalent"] * row["density"]


def _run_dense(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    case: dict[str, Any],
    warmup: int,
    repeats: int,
    bar: tqdm,
) -> list[dict[str, Any]]:
    """Rows of the dense baselines on ``q, k, v``; the first is plain SDPA."""
    rows = []
    for name, fn, context, reason in _dense_candidates(q, k, v):
        bar.set_postfix_str(f"N={case['seq_len']} D={case['head_dim']} dense {name}")
        ms = None
        if fn is not None:
            try:
                with context(), warnings.catch_warnings():
                    # Forced SDPA backends warn about why they cannot run before raising.
                    warnings.simplefilter("ignore")
                    fn()
                    ms = median_ms(fn, q.device, warmup, repeats)
            except (RuntimeError, ValueError) as error:  # includes OutOfMemoryError, NotImplementedError
                reason = _first_line(error)
                _free_cuda(q.device)
        if reason is not None:
            logger.info("skipping dense %s at N=%d D=%d: %s", name, case["seq_len"], case["head_dim"], reason)
        rows.append(
            _result_row(case, kind="dense", backend=name, density_requested=1.0, density=1.0, ms=ms, skipped=reason)
        )
        bar.update()
    return rows


def _run_sparse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: BlockSparseMask,
    backend: str,
    density: float,
    case: dict[str, Any],
    warmup: int,
    repeats: int,
    bar: tqdm,
    skip: str | None,
    quant: str | None = None,
    prequantized: bool = False,
    return_lse: bool = False,
) -> dict[str, Any]:
    """Row of one block-sparse backend at one density; ``skip`` is a reason known before trying.

    It is timed alternately with dense SDPA, whose time and ratio go in ``paired_sdpa_ms`` and
    ``speedup_vs_sdpa``. ``quant`` times the call with ``quant=quant``; ``prequantized`` (triton only)
    times the quantized kernel alone, on Q/K quantized once before timing.
    """
    label = _label(backend, quant, prequantized, return_lse)
    bar.set_postfix_str(f"N={case['seq_len']} D={case['head_dim']} {label} density={density:g}")
    ms = paired_sdpa_ms = ratio = None
    if skip is None and (prequantized or return_lse) and backend in BACKENDS:
        skip = BACKENDS[backend].unsupported_reason(q, mask, return_lse)
    if skip is None:
        if prequantized:
            fn = _prequantized_triton_call(q, k, v, mask, quant)
        else:
            fn = lambda: block_sparse_attention(  # (B, H, N, D), with the LSE (B, H, N) when asked
                q, k, v, mask, backend=backend, quant=quant, return_lse=return_lse
            )
        sdpa = lambda: F.scaled_dot_product_attention(q, k, v)  # (B, H, N, D)
        try:
            fn()  # checks that the backend takes the call; compiles FlexAttention for a new shape
            ms, paired_sdpa_ms, ratio = _time_paired_ms(fn, sdpa, q.device, warmup, repeats)
        except ValueError as error:
            skip = str(error)
        except torch.OutOfMemoryError as error:
            skip = _first_line(error)
            _free_cuda(q.device)
        except RuntimeError as error:
            # A backend that compiles (flex, flex-flash) can fail inside inductor; one failing backend must not
            # end a sweep whose other rows are still to be measured.
            skip = f"failed: {_first_line(error)}"
            _free_cuda(q.device)
    if skip is not None:
        logger.info(
            "skipping %s at N=%d D=%d density=%g: %s",
            label,
            case["seq_len"],
            case["head_dim"],
            density,
            skip,
        )
    bar.update()
    row = _result_row(
        case,
        kind="block_sparse",
        backend=backend,
        density_requested=density,
        density=mask.density(),
        ms=ms,
        skipped=skip,
    )
    row["paired_sdpa_ms"], row["speedup_vs_sdpa"] = paired_sdpa_ms, ratio
    row["quant"], row["prequantized"], row["return_lse"] = quant, prequantized, return_lse
    return row


def _prequantized_triton_call(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: BlockSparseMask, quant: str
) -> Callable[[], Any]:
    """The quantized Triton kernel alone: Q and smoothed K quantized once, here, outside the timing."""
    from ..kernels.quant import quantize_qk

    quantized = quantize_qk(q, k, mask.block_size, quant)
    bq, bk = mask.block_size
    scale = 1.0 / math.sqrt(q.shape[-1])
    kv_num, kv_idx = mask.kv_num_blocks, mask.kv_indices
    return lambda: torch.ops.dit_sparse.block_sparse_attention_fwd(
        quantized.q, quantized.k, v, kv_num, kv_idx, scale, bq, bk, False, quantized.q_scale, quantized.k_scale
    )


def _label(backend: str, quant: str | None, prequantized: bool, return_lse: bool = False) -> str:
    """How a row's backend reads in the table: ``triton``, ``triton int8``, ``triton int8 pre-quantized``,
    ``gather +lse`` (the call also returns the LSE)."""
    label = backend if quant is None else f"{backend} {quant}" + (" pre-quantized" if prequantized else "")
    return label + (" +lse" if return_lse else "")


def _quant_variants(backend: str, quant: Sequence[str]) -> list[tuple[str, bool]]:
    """(quant, prequantized) rows a backend gets besides its unquantized one."""
    if backend not in BACKENDS or BACKENDS[backend].quantized_forward is None:
        return []
    return [(mode, pre) for mode in quant for pre in ((False, True) if backend == "triton" else (False,))]


def _add_quant_speedups(rows: list[dict[str, Any]]) -> None:
    """``speedup_vs_unquantized`` of each quantized row: the same backend and mask without ``quant``."""
    plain = {
        (row["backend"], row["density_requested"]): row["ms"]
        for row in rows
        if row["quant"] is None and not row["return_lse"]
    }
    for row in rows:
        base = plain.get((row["backend"], row["density_requested"]))
        if row["quant"] is not None and row["ms"] is not None and base is not None:
            row["speedup_vs_unquantized"] = base / row["ms"]


def run_attention_benchmark(
    *,
    seq_lens: Sequence[int] | None = None,
    head_dims: Sequence[int] | None = None,
    densities: Sequence[float] | None = None,
    backends: Sequence[str] | None = None,
    heads: int | None = None,
    batch: int | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    block_size: int | tuple[int, int] | None = None,
    warmup: int | None = None,
    repeats: int | None = None,
    max_reference_bytes: int | None = None,
    seed: int | None = None,
    quant: Sequence[str] | None = None,
    lse: bool | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Time block-sparse attention backends against dense attention on random inputs and masks.

    Every argument left ``None`` takes its value from :func:`default_settings` for ``device``.

    Args:
        seq_lens (`Sequence[int]`): tokens ``N`` (self-attention, ``Nq == Nk``).
        head_dims (`Sequence[int]`): head dims ``D``.
        densities (`Sequence[float]`): fractions of kv blocks kept per q-block row, in ``(0, 1]``;
            defaults to ``(1.0, 0.5, 0.25, 0.10, 0.05)``.
        backends (`Sequence[str]`): block-sparse backends to time; defaults to every backend available
            on ``device`` (Triton's CPU interpreter excluded), then ``"auto"`` (what a user gets: the backend
            :func:`~dit_sparse.attention.select_backend` picks, and dense SDPA for a mask that keeps every
            block). Backends that cannot run give skipped rows.
        heads (`int`): attention heads ``H``.
        batch (`int`): batch size ``B``; the masks have the same batch (one random mask per sample).
        dtype (`torch.dtype` or `str`): ``"float32"``, ``"bfloat16"``, ``"float16"`` (or fp32/bf16/fp16).
        device (`torch.device` or `str`): defaults to CUDA if present, else CPU.
        block_size (`int` or `(int, int)`): mask block size ``(bq, bk)``.
        warmup (`int`): untimed calls per case after the first (checking and compiling) call.
        repeats (`int`): timed calls per case; the median is reported.
        max_reference_bytes (`int`): skip the reference backend when its estimated N x N memory (token
            mask, its float copy, scores) exceeds this many bytes.
        seed (`int`): seed of the inputs and masks.
        quant (`Sequence[str]`, defaults to none): quant modes (``"int8"``, ``"int4"``) to time besides the
            unquantized call, on the backends that have quantized attention (others get no extra rows);
            ``triton`` also gets a row for its kernel alone on pre-quantized Q/K.
        lse (`bool`, defaults to False): also time every backend with ``return_lse=True`` (rows labelled
            ``+lse``; backends that cannot return it give skipped rows).
        progress (`bool`, defaults to True): show a tqdm progress bar on stderr.

    Returns:
        One dict per (N, D, baseline) and per (N, D, backend, density), with keys ``kind``
        (``"dense"`` or ``"block_sparse"``), ``backend``, ``seq_len``, ``head_dim``, ``heads``, ``batch``,
        ``dtype``, ``block_size``, ``density_requested``, ``density`` (``mask.density()``), ``ms``,
        ``dense_sdpa_ms``, ``best_dense_ms``, ``best_dense_name``, ``paired_sdpa_ms`` and
        ``speedup_vs_sdpa`` (block-sparse rows are timed alternately with dense SDPA: the median SDPA time
        of those calls and the median of the per-pair ratios), ``speedup_vs_best_dense``,
        ``ideal_speedup`` (``1 / density``), ``efficiency``
        (``speedup_vs_sdpa / ideal_speedup``), ``tflops_dense_equivalent`` (``4 B H N^2 D`` per second),
        ``tflops_actual`` (the same times ``density``) and ``skipped`` (``None``, or why the case did not
        run, in which case the timing fields are ``None``), ``quant`` (``None`` or the mode), ``prequantized``
        and ``speedup_vs_unquantized`` (quantized rows: the unquantized row's time over theirs), and
        ``return_lse``. Dense
        baselines have density 1.
    """
    device = _resolve_device(device)
    defaults = default_settings(device)
    seq_lens = list(defaults["seq_lens"] if seq_lens is None else seq_lens)
    head_dims = list(defaults["head_dims"] if head_dims is None else head_dims)
    densities = list(defaults["densities"] if densities is None else densities)
    backends = list(defaults["backends"] if backends is None else backends)
    heads = defaults["heads"] if heads is None else heads
    batch = defaults["batch"] if batch is None else batch
    dtype = _resolve_dtype(defaults["dtype"] if dtype is None else dtype)
    block_size = defaults["block_size"] if block_size is None else block_size
    block_size = (block_size, block_size) if isinstance(block_size, int) else tuple(block_size)
    warmup = defaults["warmup"] if warmup is None else warmup
    repeats = defaults["repeats"] if repeats is None else repeats
    max_reference_bytes = defaults["max_reference_bytes"] if max_reference_bytes is None else max_reference_bytes
    seed = defaults["seed"] if seed is None else seed
    quant = list(defaults["quant"] if quant is None else quant)
    lse = defaults["lse"] if lse is None else lse
    for mode in quant:
        if mode not in QUANT_MODES:
            raise ValueError(f"unknown quant mode {mode!r}; choose from {list(QUANT_MODES)}")

    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for density in densities:
        if not 0 < density <= 1:
            raise ValueError(f"densities must be fractions in (0, 1], got {density!r}")
    unknown = [name for name in backends if name not in BACKENDS and name != "auto"]
    if unknown:
        raise ValueError(f"unknown backends {unknown}; choose from {['auto', *BACKENDS]}")
    unavailable = {name: reason for name, reason in backend_status(device).items() if reason is not None}

    n_dense = 1 if device.type != "cuda" else 4
    bar = tqdm(
        total=len(seq_lens)
        * len(head_dims)
        * (n_dense + sum(1 + lse + len(_quant_variants(name, quant)) for name in backends) * len(densities)),
        desc="attention benchmark",
        unit="case",
        file=sys.stderr,
        disable=not progress,
    )
    rows: list[dict[str, Any]] = []
    with torch.inference_mode(), bar:
        for N in seq_lens:
            masks = {
                density: random_block_mask(
                    batch,
                    heads,
                    N,
                    density,
                    block_size,
                    generator=torch.Generator().manual_seed(seed + 1),
                    device=device,
                )
                for density in densities
            }
            for D in head_dims:
                case = {
                    "seq_len": N,
                    "head_dim": D,
                    "heads": heads,
                    "batch": batch,
                    "dtype": _dtype_name(dtype),
                    "block_size": list(block_size),
                }
                generator = torch.Generator(device=device).manual_seed(seed)
                q, k, v = (
                    torch.randn(batch, heads, N, D, generator=generator, device=device, dtype=dtype) for _ in range(3)
                )  # (B, H, N, D) each

                dense_rows = _run_dense(q, k, v, case, warmup, repeats, bar)
                timed = [(row["backend"], row["ms"]) for row in dense_rows if row["ms"] is not None]
                sdpa_ms = dense_rows[0]["ms"]
                best = min(timed, key=lambda item: item[1]) if timed else None
                sparse_rows = []
                for name in backends:
                    for density in densities:
                        skip = unavailable.get(name)
                        if skip is None and name == "reference":
                            needed = _reference_bytes(masks[density].batch, batch, heads, N, dtype.itemsize)
                            if needed > max_reference_bytes:
                                skip = (
                                    f"reference needs ~{needed / 2**30:.2g} GiB of N x N memory, over "
                                    f"max_reference_bytes ({max_reference_bytes / 2**30:.2g} GiB)"
                                )
                        sparse_rows.append(
                            _run_sparse(q, k, v, masks[density], name, density, case, warmup, repeats, bar, skip)
                        )
                        if lse:
                            sparse_rows.append(
                                _run_sparse(
                                    *(q, k, v, masks[density], name, density, case, warmup, repeats, bar, skip),
                                    return_lse=True,
                                )
                            )
                        for mode, pre in _quant_variants(name, quant):
                            sparse_rows.append(
                                _run_sparse(
                                    q, k, v, masks[density], name, density, case, warmup, repeats, bar, skip, mode, pre
                                )
                            )
                _add_baselines(dense_rows + sparse_rows, sdpa_ms, best)
                _add_quant_speedups(sparse_rows)
                rows += dense_rows + sparse_rows
                del q, k, v
                _free_cuda(device)
    return rows


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------
def _number(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Aligned plain-text table of benchmark rows; a skipped row shows its reason instead of timings.

    Columns: backend, N, D, density (of the mask), ms, speedup over dense SDPA, speedup over the best
    dense baseline, dense-equivalent TFLOP/s (``4 B H N^2 D`` per second, so comparable across
    densities) and efficiency (speedup over SDPA divided by the ideal ``1 / density``).
    """
    headers = [
        "backend",
        "N",
        "D",
        "density",
        "ms",
        "x vs SDPA",
        "x vs best dense",
        "TFLOP/s dense-eq",
        "efficiency",
    ]
    lead = 4  # columns shown for skipped rows too
    table: list[list[str]] = []
    skipped: dict[int, str] = {}
    for index, row in enumerate(rows):
        density = row["density"] if row.get("density") is not None else row["density_requested"]
        label = _label(row["backend"], row.get("quant"), row.get("prequantized", False), row.get("return_lse", False))
        cells = [label, str(row["seq_len"]), str(row["head_dim"]), f"{density:.3f}"]
        if row.get("skipped") is not None:
            skipped[index] = f"skipped: {row['skipped']}"
            cells += [""] * (len(headers) - lead)
        else:
            optional = [row["speedup_vs_sdpa"], row["speedup_vs_best_dense"]]
            cells += [_number(row["ms"])]
            cells += ["-" if value is None else f"{value:.2f}" for value in optional]
            cells += [_number(row["tflops_dense_equivalent"])]
            cells += ["-" if row["efficiency"] is None else f"{row['efficiency']:.0%}"]
        table.append(cells)
    widths = [
        max([len(header)] + [len(cells[col]) for i, cells in enumerate(table) if col < lead or i not in skipped])
        for col, header in enumerate(headers)
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if col == 0 else cell.rjust(width)
            for col, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(headers), line(["-" * width for width in widths])]
    for index, cells in enumerate(table):
        if index in skipped:
            out.append("  ".join([line(cells[:lead] + [""] * (len(headers) - lead)).rstrip(), skipped[index]]))
        else:
            out.append(line(cells))
    bests = {
        (row["seq_len"], row["head_dim"]): (row["best_dense_name"], row["best_dense_ms"])
        for row in rows
        if row.get("best_dense_name") is not None
    }
    for (N, D), (name, ms) in bests.items():
        out.append(f"best dense at N={N}, D={D}: {name} ({_number(ms)} ms)")
    for row in rows:
        if row.get("speedup_vs_unquantized") is not None:
            out.append(
                f"{_label(row['backend'], row['quant'], row['prequantized'])} at N={row['seq_len']}, "
                f"D={row['head_dim']}, density={row['density']:.3f}: {row['speedup_vs_unquantized']:.2f}x "
                f"the unquantized {row['backend']} ({row['dtype']})"
            )
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _non_negative_int(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def parse_densities(text: str) -> list[float]:
    """Densities from ``"100,50,25"`` (percentages) or ``"1,0.5,0.25"`` (fractions).

    A value with a ``%`` suffix is a percentage. Otherwise, if any value in the list is above 1 the whole
    list is read as percentages, else as fractions: ``"100,50,5"`` and ``"1,0.5,0.05"`` are the same.
    Each density must end up in ``(0, 1]``.
    """
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        values = [(float(part[:-1]), True) if part.endswith("%") else (float(part), False) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one density")
    percentages = any(value > 1 for value, is_percent in values if not is_percent)
    densities = [value / 100 if is_percent or percentages else value for value, is_percent in values]
    bad = [d for d in densities if not (0 < d <= 1) or math.isnan(d)]
    if bad:
        raise argparse.ArgumentTypeError(f"densities must lie in (0, 100%], got {text!r}")
    return densities


def _backend_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in BACKENDS and name != "auto"]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown backend(s) {unknown or text!r}; choose from {['auto', *BACKENDS]}")
    return names


def _quant_list(text: str) -> list[str]:
    modes = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [mode for mode in modes if mode not in QUANT_MODES]
    if not modes or unknown:
        raise argparse.ArgumentTypeError(f"unknown quant mode(s) {unknown or text!r}; choose from {list(QUANT_MODES)}")
    return modes


def _block_size(text: str) -> tuple[int, int]:
    values = _int_list(text)
    if len(values) not in (1, 2) or any(value not in SUPPORTED_BLOCK_SIZES for value in values):
        raise argparse.ArgumentTypeError(
            f"block size must be one or two (q,kv) of {SUPPORTED_BLOCK_SIZES}, got {text!r}"
        )
    return (values[0], values[-1])


def _dtype_arg(text: str) -> str:
    try:
        return _dtype_name(_resolve_dtype(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _device_arg(text: str) -> str:
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"the benchmark runs on cpu or cuda, got {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("--device cuda, but torch sees no CUDA device")
    return str(device)


def build_parser() -> argparse.ArgumentParser:
    """The command line of :func:`main` (reused by the ``dit-sparse bench`` command)."""
    parser = argparse.ArgumentParser(
        prog="benchmarks/attention.py",
        description=(
            "Time block-sparse attention backends against dense SDPA (and, on a GPU, FlashAttention, "
            "cuDNN and xformers) measured in the same run. Unset options take the device's defaults."
        ),
    )
    parser.add_argument("--device", type=_device_arg, help="cpu or cuda[:i] (default: cuda if present)")
    parser.add_argument("--dtype", type=_dtype_arg, help="fp32, bf16 or fp16 (default: fp32 on CPU, bf16 on GPU)")
    parser.add_argument("--seq-lens", type=_int_list, help="comma-separated token counts N, e.g. 4096,16384")
    parser.add_argument("--head-dims", type=_int_list, help="comma-separated head dims D, e.g. 64,128")
    parser.add_argument(
        "--densities",
        type=parse_densities,
        help=(
            "comma-separated block densities, as percentages (100,50,25,10,5) or fractions (1,0.5,0.25); "
            "read as percentages when any value is above 1 or has a %% suffix (default: 100,50,25,10,5)"
        ),
    )
    parser.add_argument(
        "--backends",
        type=_backend_list,
        help=f"comma-separated of auto,{','.join(BACKENDS)} (default: those available on the device, then auto)",
    )
    parser.add_argument("--heads", type=_positive_int, help="attention heads H")
    parser.add_argument("--batch", type=_positive_int, help="batch size B")
    parser.add_argument("--block-size", type=_block_size, help="mask block size: 128 or q,kv like 128,64")
    parser.add_argument("--warmup", type=_non_negative_int, help="untimed calls per case (after the first)")
    parser.add_argument("--repeats", type=_positive_int, help="timed calls per case (median reported)")
    parser.add_argument(
        "--max-reference-gib",
        type=float,
        help="skip the reference backend above this estimated N x N memory in GiB "
        f"(default {DEFAULT_MAX_REFERENCE_BYTES / 2**30:g})",
    )
    parser.add_argument("--seed", type=int, help="seed of inputs and masks (default 0)")
    parser.add_argument(
        "--quant",
        type=_quant_list,
        help="also time quantized Q/K (comma-separated of int8,int4) on the backends that have it, at the "
        "same masks; triton also gets its kernel alone on pre-quantized Q/K",
    )
    parser.add_argument(
        "--lse", action="store_true", help="also time each backend returning the LSE (rows labelled +lse)"
    )
    parser.add_argument("--out", type=Path, help="write JSON {environment, settings, results} to this path")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny run (N 512, D 64, H 2, reference backend unless --backends is given); seconds on a CPU",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the attention benchmark from the command line; prints the table, optionally writes JSON.

    Args:
        argv (`Sequence[str]`, optional): arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The exit status (0). Bad arguments exit with status 2 through argparse.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_reference_gib is not None and not args.max_reference_gib > 0:
        parser.error(f"--max-reference-gib must be positive, got {args.max_reference_gib}")
    settings = default_settings(args.device)
    if args.quick:
        settings.update(seq_lens=[512], head_dims=[64], heads=2, batch=1, backends=["reference"], warmup=1, repeats=3)
    overrides = {
        "dtype": args.dtype,
        "seq_lens": args.seq_lens,
        "head_dims": args.head_dims,
        "densities": args.densities,
        "backends": args.backends,
        "heads": args.heads,
        "batch": args.batch,
        "block_size": args.block_size,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seed": args.seed,
        "quant": args.quant,
        "lse": args.lse or None,
    }
    if args.max_reference_gib is not None:
        overrides["max_reference_bytes"] = int(args.max_reference_gib * 2**30)
    settings.update({key: value for key, value in overrides.items() if value is not None})

    rows = run_attention_benchmark(**settings, progress=not args.no_progress)
    print(format_table(rows))
    if args.out is not None:
        report = {"environment": environment_info(settings["device"]), "settings": settings, "results": rows}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
