"""Compile our Triton kernels for real GPU targets on any machine, and read what each config costs.

No GPU is needed: ``triton.compile`` lowers a kernel for a named target (``GPUTarget("cuda", 90, 32)`` is
sm_90, H100/H200; 80 is A100) down to a cubin with the ``ptxas`` that ships inside the triton wheel. From the
result we read the shared memory one program needs (Triton's own figure, the one the driver is asked for at
launch) and, by running that ``ptxas -v`` over the PTX once more, the registers per thread and the bytes spilled
to local memory. A config whose shared memory exceeds the target's per-block limit fails at launch; one that
spills runs, but slowly.

The argument signature mimics what Triton's launcher specializes at run time for the inputs the library
passes: every pointer and every row/head/batch stride divisible by 16, the head-dim stride equal to 1
(a constant), and the tables' innermost strides equal to 1. :func:`kernel_variants` lists what the library can
launch; :func:`check_variant` compiles one. ``benchmarks/compile_check.py`` runs the full sweep and writes its
table; ``tests/kernels/test_compile_check.py`` runs a subset in CI.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .gpu_model import (
    TileConfig,
    attention_configs,
    autotune_candidates,
    block_mass_configs,
    dtype_bytes,
    estimate_shared_bytes,
    max_shared_bytes,
    tile_registers,
    tma_attention_configs,
)

ARCHS = (80, 90)
DTYPES = ("fp16", "bf16")
HEAD_DIMS = (64, 128)
MASK_BLOCKS = (64, 128, 256)
KERNELS = ("attention", "attention_tma", "block_mass", "pyramid")
# Pooling levels the pyramid kernel is compiled with: levels 1 and 2 (2 and 4 tokens per pooled key).
PYRAMID_MAX_LEVEL = 2


@dataclass(frozen=True)
class Variant:
    """One compile of one kernel: target, inputs and tile config."""

    kernel: str  # one of KERNELS
    arch: int  # compute capability, 80 or 90
    dtype: str  # "fp16" or "bf16" (int8 Q/K when quant)
    head_dim: int
    mask_block: int
    config: TileConfig
    lse: bool = False
    quant: bool = False
    warp_specialize: bool = False
    max_level: int = 0  # the pyramid kernel's deepest pooling level (0 for the others)

    def label(self) -> str:
        c = self.config
        flags = ("+lse" if self.lse else "") + ("+int8" if self.quant else "") + ("+ws" if self.warp_specialize else "")
        flags += f"+L{self.max_level}" if self.max_level else ""
        return (
            f"{self.kernel} sm_{self.arch} {self.dtype}{flags} D{self.head_dim} mask{self.mask_block} "
            f"{c.block_m}x{c.block_n} w{c.num_warps} s{c.num_stages}"
        )


@dataclass(frozen=True)
class CompileStats:
    """What one compile costs. ``error`` is set (and the rest zero) where it did not compile."""

    variant: Variant
    shared_bytes: int
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    seconds: float
    error: str | None = None

    @property
    def max_shared_bytes(self) -> int:
        return max_shared_bytes(self.variant.arch)

    @property
    def fits(self) -> bool:
        """Compiled, and its shared memory is within the target's per-block limit (so it can launch)."""
        return self.error is None and self.shared_bytes <= self.max_shared_bytes

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0

    @property
    def ok(self) -> bool:
        """Launches and does not spill: what every config the autotuner may pick must be."""
        return self.fits and not self.spills

    def as_row(self) -> dict:
        row = asdict(self.variant)
        row.update(row.pop("config"))
        row.update(
            label=self.variant.label(),
            shared_bytes=self.shared_bytes,
            model_shared_bytes=model_shared_bytes(self.variant),
            max_shared_bytes=self.max_shared_bytes,
            registers=self.registers,
            spill_stores=self.spill_stores,
            spill_loads=self.spill_loads,
            stack_bytes=self.stack_bytes,
            fits=self.fits,
            ok=self.ok,
            seconds=round(self.seconds, 2),
            error=self.error,
        )
        return row


def unavailable_reason() -> str | None:
    """Why kernels cannot be compiled for a GPU target here (None if they can)."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return "TRITON_INTERPRET=1 is set (kernels become interpreted functions); run without it"
    try:
        import triton  # noqa: F401
        from triton.backends.nvidia.compiler import get_ptxas
    except ImportError as error:
        return f"triton with its nvidia backend is not installed ({error})"
    try:
        for arch in ARCHS:
            if not Path(get_ptxas(arch).path).is_file():
                return f"the ptxas for sm_{arch} is missing from the triton install"
    except Exception as error:  # a broken install; the reason is what the test should print
        return f"triton cannot find ptxas: {error}"
    return None


def kernel_variants(
    kernels: tuple[str, ...] = KERNELS,
    archs: tuple[int, ...] = ARCHS,
    dtypes: tuple[str, ...] = DTYPES,
    head_dims: tuple[int, ...] = HEAD_DIMS,
    mask_blocks: tuple[int, ...] = MASK_BLOCKS,
    *,
    all_configs: bool = False,
) -> list[Variant]:
    """Every (kernel, target, inputs, config) the autotuners may launch; with ``all_configs`` every tile config.

    The configs per key are the autotuner's candidates: the model's kept configs
    (:mod:`dit_sparse.kernels.gpu_model`), at most ``AUTOTUNE_MAX_CONFIGS`` of them.

    Attention: with and without LSE, and int8 Q/K (QUANT, always with LSE off and on alike). The
    tensor-descriptor attention (sm_90 and newer only): with and without LSE and warp specialization. Block
    mass: its inputs only. Pyramid: with and without LSE, levels up to :data:`PYRAMID_MAX_LEVEL`, the
    attention kernel's configs (its autotuner prunes by the same model).
    """
    variants = []
    for kernel in kernels:
        for arch in archs:
            for dtype in dtypes:
                for head_dim in head_dims:
                    for mask_block in mask_blocks:
                        if kernel == "attention_tma" and arch < 90:
                            continue
                        elem = dtype_bytes(dtype)
                        if kernel == "attention":
                            flag_sets = [(lse, quant, False) for lse in (False, True) for quant in (False, True)]
                        elif kernel == "pyramid":
                            flag_sets = [(lse, False, False) for lse in (False, True)]
                        elif kernel == "attention_tma":
                            flag_sets = [(lse, False, ws) for lse in (False, True) for ws in (False, True)]
                        else:
                            flag_sets = [(False, False, False)]
                        for lse, quant, ws in flag_sets:
                            if kernel in ("attention", "pyramid"):
                                configs = attention_configs(
                                    arch, mask_block, mask_block, head_dim, elem, quant=quant, prune=not all_configs
                                )
                            elif kernel == "attention_tma":
                                configs = (
                                    attention_configs(arch, mask_block, mask_block, head_dim, elem, prune=False)
                                    if all_configs
                                    else tma_attention_configs(arch, mask_block, mask_block, head_dim, elem)
                                )
                            else:
                                configs = block_mass_configs(
                                    arch, mask_block, mask_block, head_dim, elem, prune=not all_configs
                                )
                            if not all_configs:
                                configs = autotune_candidates(configs)
                            max_level = PYRAMID_MAX_LEVEL if kernel == "pyramid" else 0
                            for config in configs:
                                flags = (lse, quant, ws, max_level)
                                variants.append(Variant(kernel, arch, dtype, head_dim, mask_block, config, *flags))
    return variants


def _pointer(dtype: str) -> str:
    return {"fp16": "*fp16", "bf16": "*bf16", "fp32": "*fp32", "int8": "*i8", "int32": "*i32"}[dtype]


def _attention_source(variant: Variant):
    from triton.compiler import ASTSource

    from .triton_block_sparse import _kernels

    fn = _kernels()[0]
    qk = "int8" if variant.quant else variant.dtype
    pointers = dict(Q=qk, K=qk, V=variant.dtype, Out=variant.dtype, Lse="fp32", KV_NUM="int32", KV_IDX="int32")
    pointers.update(Q_SCALE="fp32", K_SCALE="fp32")
    ones = {"stride_qd", "stride_kd", "stride_vd", "stride_od", "stride_numm"}
    block_d = max(32 if variant.quant else 16, 1 << (variant.head_dim - 1).bit_length())
    constants = dict(
        HEAD_DIM=variant.head_dim, MASK_BQ=variant.mask_block, MASK_BK=variant.mask_block,
        BLOCK_M=variant.config.block_m, BLOCK_N=variant.config.block_n, BLOCK_D=block_d,
        EVEN_N=False, OUTPUT_LSE=variant.lse, IEEE_DOT=False, QUANT=variant.quant,
    )  # fmt: skip
    return _source(ASTSource, fn, pointers, ones, constants, floats={"qk_scale_log2"})


def _attention_tma_source(variant: Variant):
    from triton.compiler import ASTSource

    from .triton_jit import _block_sparse_fwd_tma_kernel as fn

    pointers = dict(Q=variant.dtype, K=variant.dtype, V=variant.dtype, Out=variant.dtype, Lse="fp32")
    pointers.update(KV_NUM="int32", KV_IDX="int32")
    constants = dict(
        HEAD_DIM=variant.head_dim, MASK_BQ=variant.mask_block, MASK_BK=variant.mask_block,
        BLOCK_M=variant.config.block_m, BLOCK_N=variant.config.block_n, EVEN_N=False, OUTPUT_LSE=variant.lse,
        WARP_SPECIALIZE=variant.warp_specialize,
    )  # fmt: skip
    return _source(ASTSource, fn, pointers, {"stride_numm"}, constants, floats={"qk_scale_log2"})


def _block_mass_source(variant: Variant):
    from triton.compiler import ASTSource

    from .triton_jit import _block_mass_kernel as fn

    pointers = dict(Q=variant.dtype, K=variant.dtype, LSE="fp32", MASS="fp32")
    ones = {"stride_qd", "stride_kd"}
    block_d = max(16, 1 << (variant.head_dim - 1).bit_length())
    constants = dict(
        HEAD_DIM=variant.head_dim, MASK_BQ=variant.mask_block, MASK_BK=variant.mask_block,
        BLOCK_M=variant.config.block_m, BLOCK_N=variant.config.block_n, BLOCK_D=block_d, EVEN_N=False,
        IEEE_DOT=False,
    )  # fmt: skip
    return _source(ASTSource, fn, pointers, ones, constants, floats={"qk_scale_log2"})


def _pyramid_source(variant: Variant):
    from triton.compiler import ASTSource

    from .pyramid import _pyramid_kernels

    fn = _pyramid_kernels()[0]
    dtype = variant.dtype
    pointers = dict(Q=dtype, K=dtype, V=dtype, K_POOL=dtype, V_POOL=dtype, Out=dtype, Lse="fp32")
    pointers.update(LEVEL_NUM="int32", LEVEL_IDX="int32")
    ones = {"stride_qd", "stride_kd", "stride_vd", "stride_od", "stride_pd", "stride_numm"}
    constants = dict(
        HEAD_DIM=variant.head_dim, MASK_BQ=variant.mask_block, MASK_BK=variant.mask_block,
        MAX_LEVEL=variant.max_level, BLOCK_M=variant.config.block_m, BLOCK_N=variant.config.block_n,
        BLOCK_D=max(16, 1 << (variant.head_dim - 1).bit_length()), EVEN_N=False, OUTPUT_LSE=variant.lse,
        IEEE_DOT=False,
    )  # fmt: skip
    return _source(ASTSource, fn, pointers, ones, constants, floats={"qk_scale_log2"})


def _source(ast_source, fn, pointers, ones, constants, floats):
    """The signature Triton's launcher would build: 16-divisible pointers and strides, unit strides constant."""
    signature, attrs, constexprs = {}, {}, {}
    for index, name in enumerate(fn.arg_names):
        if name in constants:
            signature[name] = "constexpr"
            constexprs[name] = constants[name]
        elif name in pointers:
            signature[name] = _pointer(pointers[name])
            attrs[(index,)] = [["tt.divisibility", 16]]
        elif name in ones:
            signature[name] = "constexpr"
            constexprs[name] = 1
        elif name in floats:
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
            level_tables = ("numl", "numb", "numh", "idxl", "idxm")
            if name.startswith("stride_") and not name.endswith((*level_tables, "qsb", "qsh", "ksb", "ksh")):
                attrs[(index,)] = [["tt.divisibility", 16]]
    missing = set(constants) - set(fn.arg_names)
    if missing:
        raise ValueError(f"{fn.__name__} has no arguments {sorted(missing)}")
    return ast_source(fn, signature, constexprs=constexprs, attrs=attrs)


_PTXAS_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGISTERS = re.compile(r"Used (\d+) registers")


def check_variant(variant: Variant) -> CompileStats:
    """Compile ``variant`` for its target and read shared memory, registers and spills (no GPU needed)."""
    import time

    import triton
    from triton.backends.compiler import GPUTarget

    start = time.perf_counter()
    sources = {"attention": _attention_source, "attention_tma": _attention_tma_source, "pyramid": _pyramid_source}
    source = sources.get(variant.kernel, _block_mass_source)(variant)
    options = {"num_warps": variant.config.num_warps, "num_stages": variant.config.num_stages}
    try:
        with contextlib.redirect_stdout(io.StringIO()), _quiet_fp_fusion_warning():
            compiled = triton.compile(source, target=GPUTarget("cuda", variant.arch, 32), options=options)
        registers, spill_stores, spill_loads, stack = _ptxas_usage(compiled.asm["ptx"], variant.arch)
    except Exception as error:  # a failed compile is a result of the check, reported per variant
        message = str(error).strip().splitlines()
        return CompileStats(variant, 0, 0, 0, 0, 0, time.perf_counter() - start, message[0] if message else repr(error))
    shared = int(compiled.metadata.shared)
    return CompileStats(variant, shared, registers, spill_stores, spill_loads, stack, time.perf_counter() - start)


@contextlib.contextmanager
def _quiet_fp_fusion_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")
        yield


@functools.cache
def _ptxas(arch: int) -> str:
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas(arch).path


def _ptxas_usage(ptx: str, arch: int) -> tuple[int, int, int, int]:
    """(registers, spill store bytes, spill load bytes, stack frame bytes) from ``ptxas -v``."""
    gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        result = subprocess.run(
            [_ptxas(arch), "-v", f"--gpu-name={gpu}", str(source), "-o", str(Path(folder) / "kernel.o")],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"ptxas failed: {result.stderr.strip()[:500]}")
    spills = _PTXAS_SPILLS.search(result.stderr)
    registers = _PTXAS_REGISTERS.search(result.stderr)
    if spills is None or registers is None:
        raise RuntimeError(f"cannot read ptxas -v output: {result.stderr.strip()[:500]}")
    stack, stores, loads = (int(x) for x in spills.groups())
    return int(registers.group(1)), stores, loads, stack


# The config the shared-memory bar names: sm_90, bf16, D 128, 128x64 tiles, 8 warps, 3 stages.
REFERENCE_VARIANT = Variant("attention", 90, "bf16", 128, 128, TileConfig(128, 64, 8, 3))
# The pyramid kernel at the same shape, with its LSE: its level loops must share the attention kernel's buffers.
PYRAMID_REFERENCE_VARIANT = Variant("pyramid", 90, "bf16", 128, 128, TileConfig(128, 64, 8, 3), lse=True,
                                    max_level=PYRAMID_MAX_LEVEL)  # fmt: skip


def model_configs(variant: Variant) -> list[TileConfig]:
    """The configs the model keeps for ``variant``'s kernel and inputs (before the autotuner's candidate cut)."""
    elem = dtype_bytes(variant.dtype)
    mask = variant.mask_block
    if variant.kernel in ("attention", "pyramid"):
        return attention_configs(variant.arch, mask, mask, variant.head_dim, elem, quant=variant.quant)
    if variant.kernel == "attention_tma":
        return tma_attention_configs(variant.arch, mask, mask, variant.head_dim, elem)
    return block_mass_configs(variant.arch, mask, mask, variant.head_dim, elem)


def model_shared_bytes(variant: Variant) -> int:
    """The shared memory the model expects ``variant`` to need (the pyramid kernel: the attention kernel's)."""
    return estimate_shared_bytes(
        variant.config, variant.arch, variant.head_dim, dtype_bytes(variant.dtype), quant=variant.quant,
        with_v=variant.kernel != "block_mass", tma=variant.kernel == "attention_tma",
    )  # fmt: skip


def ci_variants() -> list[Variant]:
    """The subset the test suite compiles (about 190, two or three minutes on 2 cores).

    For every kernel, target, head dim and mask block (bf16; attention also with LSE and with int8 Q/K; the
    pyramid kernel with LSE only, the same loops plus one store), the kept configs that are hardest to fit:
    the one with the most shared memory and the one with the most tile registers by the model; fp16 for mask
    block 128; and :data:`REFERENCE_VARIANT` and :data:`PYRAMID_REFERENCE_VARIANT`.
    """
    chosen = []
    for variant in kernel_variants(dtypes=("bf16", "fp16")):
        if variant.dtype == "fp16" and (variant.mask_block != 128 or variant.lse or variant.quant):
            continue
        if (variant.lse and variant.quant) or (variant.lse and variant.warp_specialize):
            continue
        if variant.kernel == "pyramid" and variant.dtype == "bf16" and not variant.lse:
            continue
        chosen.append(variant)
    groups: dict[tuple, list[Variant]] = {}
    for variant in chosen:
        key = (variant.kernel, variant.arch, variant.dtype, variant.head_dim, variant.mask_block, variant.lse,
               variant.quant, variant.warp_specialize)  # fmt: skip
        groups.setdefault(key, []).append(variant)
    subset = {REFERENCE_VARIANT, PYRAMID_REFERENCE_VARIANT}
    for group in groups.values():
        subset.add(max(group, key=model_shared_bytes))
        subset.add(max(group, key=lambda v: tile_registers(v.config, v.head_dim, v.quant)))
    return sorted(subset, key=lambda v: v.label())


def main(argv: list[str] | None = None) -> int:
    """``python -m dit_sparse.kernels.compile_check``: compile the CI subset, print one JSON row per line.

    A separate process on purpose: under ``TRITON_INTERPRET=1`` (the test suite's setting on a CPU) kernels
    cannot be compiled for a GPU target.
    """
    import argparse
    from concurrent.futures import ProcessPoolExecutor

    parser = argparse.ArgumentParser(prog="python -m dit_sparse.kernels.compile_check", description=main.__doc__)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(json.dumps({"unavailable": reason}))
        return 0
    with ProcessPoolExecutor(args.workers) as pool:
        for result in pool.map(check_variant, ci_variants()):
            print(json.dumps(result.as_row()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
