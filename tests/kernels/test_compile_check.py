"""Our Triton kernels compiled for sm_80 and sm_90 with the triton wheel's ptxas, no GPU needed.

Every config the per-architecture model keeps must compile, fit the target's shared memory and spill nothing;
the subset here is the hardest to fit per (kernel, target, dtype, head dim, mask block, flags). The full sweep
is ``python benchmarks/compile_check.py``. The compiles run in a child process: under ``TRITON_INTERPRET=1``
(this suite's setting on a CPU) kernels cannot be compiled for a GPU target.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import pytest

from dit_sparse.kernels import gpu_model
from dit_sparse.kernels.compile_check import (
    PYRAMID_REFERENCE_VARIANT,
    REFERENCE_VARIANT,
    ci_variants,
    model_configs,
)
from dit_sparse.kernels.gpu_model import TileConfig, attention_configs, block_mass_configs


@functools.cache
def _compiled_subset() -> list[dict]:
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, "-m", "dit_sparse.kernels.compile_check", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    if rows and "unavailable" in rows[0]:
        pytest.skip(f"cannot compile for GPU targets here: {rows[0]['unavailable']}")
    return rows


@pytest.fixture(scope="module")
def compiled() -> list[dict]:
    return _compiled_subset()


def test_every_variant_of_the_subset_was_compiled(compiled):
    assert len(compiled) == len(ci_variants()) > 80
    targets = {(r["kernel"], r["arch"], r["head_dim"], r["mask_block"]) for r in compiled}
    for kernel in ("attention", "block_mass", "pyramid"):
        for arch in (80, 90):
            for d in (64, 128):
                for mask in (64, 128, 256):
                    assert (kernel, arch, d, mask) in targets


def test_kept_configs_compile_fit_shared_memory_and_do_not_spill(compiled):
    failing = [
        f"{r['label']}: error={r['error']} shared={r['shared_bytes']}/{r['max_shared_bytes']} "
        f"spills={r['spill_stores']}/{r['spill_loads']} regs={r['registers']}"
        for r in compiled
        if not r["ok"]
    ]
    assert not failing, "\n".join(failing)


def test_the_model_never_underestimates_shared_memory(compiled):
    """The autotuner's pruning relies on the model; a config it keeps must not need more than it says."""
    under = []
    for r in compiled:
        if r["shared_bytes"] > r["model_shared_bytes"]:
            under.append(f"{r['label']}: compiled {r['shared_bytes']} > model {r['model_shared_bytes']}")
    assert not under, "\n".join(under)


def test_reference_shape_fits_two_programs_per_sm_on_hopper(compiled):
    """The flattened BLOCK_N loop: sm_90, bf16, D 128, 128x64, 8 warps, 3 stages within 136 KiB, no spills."""
    (row,) = [r for r in compiled if r["label"] == REFERENCE_VARIANT.label()]
    assert row["ok"]
    assert row["shared_bytes"] <= 136 * 1024


def test_the_pyramid_kernel_at_the_reference_shape_pipelines_like_the_attention_kernel(compiled):
    """Its level loops, one after another, reuse one set of K/V buffers as deep as the attention kernel's:
    more shared memory would mean buffers per level, less a loop left unpipelined."""
    (row,) = [r for r in compiled if r["label"] == PYRAMID_REFERENCE_VARIANT.label()]
    (attention,) = [r for r in compiled if r["label"] == REFERENCE_VARIANT.label()]
    assert row["ok"]
    assert row["shared_bytes"] == attention["shared_bytes"] <= 136 * 1024


def test_the_subset_compiles_only_configs_the_autotuners_may_pick():
    from dit_sparse.kernels.gpu_model import autotune_candidates

    assert all(v.config in autotune_candidates(model_configs(v)) for v in ci_variants())


def test_block_256_head_dim_128_launches_on_both_targets(compiled):
    for kernel in ("attention", "block_mass", "pyramid"):
        for arch in (80, 90):
            rows = [
                r
                for r in compiled
                if (r["kernel"], r["arch"], r["head_dim"], r["mask_block"]) == (kernel, arch, 128, 256)
            ]
            assert rows and all(r["ok"] for r in rows), (kernel, arch)


# --------------------------------------------------------------------------------------------------
# the model itself (pure Python)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("mask", [16, 32, 64, 128, 256])
@pytest.mark.parametrize("head_dim", [32, 64, 80, 128, 256])
def test_every_mask_block_and_head_dim_has_a_config_that_divides_it(arch, mask, head_dim):
    for configs in (
        attention_configs(arch, mask, mask, head_dim, 2),
        attention_configs(arch, mask, mask, head_dim, 2, quant=True),
        block_mass_configs(arch, mask, mask, head_dim, 2),
    ):
        assert configs
        assert all(mask % c.block_m == 0 and mask % c.block_n == 0 for c in configs)


def test_the_model_prunes_what_ptxas_showed_cannot_launch_or_spills():
    # sm_90, D 128, 128x128 tiles with 4 warps spill (1.7 KB per thread); 4 stages of 128x128 need 288 KiB.
    kept = attention_configs(90, 128, 128, 128, 2)
    assert TileConfig(128, 128, 4, 2) not in kept
    assert TileConfig(128, 128, 8, 4) not in kept
    assert TileConfig(128, 64, 8, 3) in kept
    # sm_80 has 163 KiB per block; two stages there are a single buffer and are dropped.
    assert all(c.num_stages >= 3 for c in attention_configs(80, 128, 128, 128, 2))


def test_shared_memory_limits_by_architecture():
    assert gpu_model.max_shared_bytes(90) == 227 * 1024
    assert gpu_model.max_shared_bytes(80) == 163 * 1024
    assert gpu_model.max_shared_bytes(89) == 99 * 1024
    with pytest.raises(ValueError, match=r"needs 8\.0 or newer"):
        gpu_model.max_shared_bytes(75)
