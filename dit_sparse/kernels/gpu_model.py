"""Which tile configs of our Triton kernels can launch, and run without spilling, on each GPU architecture.

The autotuners prune their config lists with this model before trying anything (so no config that cannot
launch is ever compiled on a user's GPU), and the compile check
(:mod:`dit_sparse.kernels.compile_check`) verifies it: every config the model keeps, on sm_80 and sm_90, in
every input dtype, head dim and mask block the library launches, must compile within the target's shared
memory and without spilling registers. Pure Python: importing it imports neither triton nor a GPU.

The model, fitted to and checked against ``ptxas`` (the compile-check tables in ``benchmarks/results/``):

- **Shared memory.** Q's tile stays in shared memory for the whole loop; K and V tiles are multi-buffered by
  Triton's software pipeliner, ``num_stages`` deep on Hopper and newer (sm_90: the bulk-copy/wgmma pipeline) and
  ``num_stages - 1`` deep before (sm_80: cp.async). In bytes,
  ``BLOCK_M*BLOCK_D*e_qk + depth*BLOCK_N*BLOCK_D*(e_qk + e_v)`` (``e`` element sizes; no V in the block-mass
  kernel), plus 2 KiB for barriers; before sm_90 and with int8 Q/K also the ``BLOCK_M x BLOCK_N`` score tile
  (re-laid out through shared memory for ``P V``), and for the tensor-descriptor kernel the output
  tile it stages for its bulk store. Kept when within the architecture's per-block limit
  (``MAX_SHARED_BYTES``).
- **Registers.** The fp32 accumulator ``BLOCK_M x BLOCK_D`` and the score tile ``BLOCK_M x BLOCK_N`` live in
  registers, spread over ``32 * num_warps`` threads. Kept when those two take at most 96 fp32 registers per
  thread on sm_90 (wgmma reads K and V from shared memory) and 80 before (mma.sync holds both operands'
  fragments in registers), of 255. On sm_80 ``num_stages=2`` (a single K/V buffer, nothing in flight) is
  dropped: it never pipelines, and one such config spilled.
"""

from __future__ import annotations

from dataclasses import dataclass

# Per-block shared memory a kernel may opt into, by compute capability (major * 10 + minor), in bytes:
# the CUDA programming guide's "maximum amount of shared memory per thread block" for each architecture.
MAX_SHARED_BYTES = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 103: 232448,
                    110: 232448, 120: 101376, 121: 101376}  # fmt: skip
# fp32 registers per thread that accumulator plus score tile may take (of 255), before and from sm_90.
TILE_REGISTER_BUDGET = {80: 80, 90: 96}
SHARED_SLACK_BYTES = 2048

# Tile shapes the autotuners start from, before pruning.
BLOCK_MS = (64, 128)
BLOCK_NS = (32, 64, 128)
NUM_WARPS = (4, 8)
NUM_STAGES = (2, 3, 4)

_DTYPE_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4, "int8": 1}


@dataclass(frozen=True)
class TileConfig:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


def dtype_bytes(dtype: str) -> int:
    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPE_BYTES)}, got {dtype!r}")
    return _DTYPE_BYTES[dtype]


def max_shared_bytes(arch: int) -> int:
    """Per-block shared-memory limit of compute capability ``arch`` (e.g. 90), or of the nearest older one."""
    known = [a for a in MAX_SHARED_BYTES if a <= arch]
    if not known:
        raise ValueError(f"no Triton kernels for compute capability {arch / 10:.1f} (needs 8.0 or newer)")
    return MAX_SHARED_BYTES[max(known)]


def padded_head_dim(head_dim: int, quant: bool = False) -> int:
    """The head dim as the kernels tile it: the next power of two, at least 16 (32 for int8 dots)."""
    return max(32 if quant else 16, 1 << (head_dim - 1).bit_length())


def estimate_shared_bytes(
    config: TileConfig,
    arch: int,
    head_dim: int,
    elem: int,
    *,
    quant: bool = False,
    with_v: bool = True,
    tma: bool = False,
) -> int:
    """Shared memory one program needs, by the model above (bytes); ``with_v=False`` for the block-mass kernel,
    ``tma=True`` for the tensor-descriptor kernel (its output tile is staged for the bulk store)."""
    d = padded_head_dim(head_dim, quant)
    qk_elem = 1 if quant else elem
    depth = config.num_stages if arch >= 90 else max(config.num_stages - 1, 1)
    kv_elem = qk_elem + (elem if with_v else 0)
    out_tile = config.block_m * d * elem if tma else 0
    # Before sm_90 (mma.sync), and with int8 dots, the scores are re-laid out for P V through shared memory.
    p_tile = config.block_m * config.block_n * elem if with_v and (quant or arch < 90) else 0
    return config.block_m * d * qk_elem + depth * config.block_n * d * kv_elem + out_tile + p_tile + SHARED_SLACK_BYTES


def tile_registers(config: TileConfig, head_dim: int, quant: bool = False) -> float:
    """fp32 registers per thread held by the accumulator and the score tile."""
    d = padded_head_dim(head_dim, quant)
    return config.block_m * (d + config.block_n) / (32 * config.num_warps)


def _fits(config: TileConfig, arch: int, head_dim: int, elem: int, quant: bool, with_v: bool) -> bool:
    if estimate_shared_bytes(config, arch, head_dim, elem, quant=quant, with_v=with_v) > max_shared_bytes(arch):
        return False
    if arch < 90 and config.num_stages < 3:
        return False
    budget = TILE_REGISTER_BUDGET[90 if arch >= 90 else 80]
    return tile_registers(config, head_dim, quant) <= budget


def all_tile_configs() -> list[TileConfig]:
    """Every tile config the autotuners start from, before pruning."""
    return [TileConfig(m, n, w, s) for m in BLOCK_MS for n in BLOCK_NS for w in NUM_WARPS for s in NUM_STAGES]


def attention_configs(
    arch: int, mask_bq: int, mask_bk: int, head_dim: int, elem: int, *, quant: bool = False, prune: bool = True
) -> list[TileConfig]:
    """Tile configs of the attention kernel that divide the mask blocks and, with ``prune``, fit ``arch``.

    ``elem`` is V's element size (Q and K are int8 with ``quant``). Never empty: where nothing fits, the
    smallest tile (checked by the compile check like every other).
    """
    return _configs(arch, mask_bq, mask_bk, head_dim, elem, quant, prune, with_v=True)


def tma_attention_configs(arch: int, mask_bq: int, mask_bk: int, head_dim: int, elem: int) -> list[TileConfig]:
    """Tile configs of the tensor-descriptor (TMA) attention kernel: the attention rules, with the output tile
    staged in shared memory for its bulk store (``BLOCK_M x head_dim`` more bytes)."""
    configs = [
        c
        for c in _configs(arch, mask_bq, mask_bk, head_dim, elem, False, True, with_v=True)
        if estimate_shared_bytes(c, arch, head_dim, elem, tma=True) <= max_shared_bytes(arch)
    ]
    return configs or [_smallest(mask_bq, mask_bk, arch)]


def block_mass_configs(
    arch: int, mask_bq: int, mask_bk: int, head_dim: int, elem: int, *, prune: bool = True
) -> list[TileConfig]:
    """Tile configs of the block-mass kernel (Q and K tiles, no V): the same rules."""
    return _configs(arch, mask_bq, mask_bk, head_dim, elem, False, prune, with_v=False)


def _configs(arch, mask_bq, mask_bk, head_dim, elem, quant, prune, with_v) -> list[TileConfig]:
    configs = [c for c in all_tile_configs() if mask_bq % c.block_m == 0 and mask_bk % c.block_n == 0]
    if prune:
        configs = [c for c in configs if _fits(c, arch, head_dim, elem, quant, with_v)]
    return configs or [_smallest(mask_bq, mask_bk, arch)]


# The autotuner benchmarks at most this many configs per key: each costs a compile (seconds) on first use.
AUTOTUNE_MAX_CONFIGS = 8


def autotune_candidates(configs: list[TileConfig], limit: int = AUTOTUNE_MAX_CONFIGS) -> list[TileConfig]:
    """The ``limit`` configs closest to the shape FlashAttention kernels use on A100/H100 (128 x 64 tiles,
    8 warps, 3 stages), nearest first: a prior, until GPU measurements rank them (none exist yet)."""

    def distance(c: TileConfig) -> tuple:
        return (
            abs((c.block_m // 64) - 2),
            abs((c.block_n // 32) - 2),
            abs(c.num_stages - 3),
            c.num_warps != 8,
        )

    return sorted(configs, key=distance)[:limit]


def _smallest(mask_bq: int, mask_bk: int, arch: int) -> TileConfig:
    return TileConfig(min(64, mask_bq), min(32, mask_bk), 4, 2 if arch >= 90 else 3)
