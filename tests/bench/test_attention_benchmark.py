"""The attention benchmark library: random masks, result rows, skip paths, the table and the CLI.

Everything here runs the reference backend on tiny shapes (no FlexAttention compilation).
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from dit_sparse import backend_status
from dit_sparse.bench.attention import (
    environment_info,
    format_table,
    main,
    parse_densities,
    random_block_mask,
    run_attention_benchmark,
)

TINY = {
    "device": "cpu",
    "seq_lens": [256],
    "head_dims": [32],
    "heads": 2,
    "batch": 1,
    "dtype": "float32",
    "block_size": (32, 32),
    "warmup": 0,
    "repeats": 2,
    "progress": False,
}


# --------------------------------------------------------------------------------------------------
# random_block_mask
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("density", "kept"), [(0.25, 2), (0.5, 4), (0.1, 1), (0.01, 1), (0.9, 7)])
def test_random_block_mask_keeps_requested_blocks_per_row(density, kept):
    mask = random_block_mask(2, 3, 1024, density, (128, 128), generator=torch.Generator().manual_seed(1))
    assert mask.blocks.shape == (2, 3, 8, 8)
    assert torch.equal(mask.kv_num_blocks, torch.full((2, 3, 8), kept, dtype=torch.int32))
    assert torch.allclose(mask.density_per_head(), torch.full((2, 3), kept / 8, dtype=torch.float64))
    assert torch.diagonal(mask.blocks, dim1=-2, dim2=-1).all()


def test_random_block_mask_full_density_keeps_every_block():
    mask = random_block_mask(1, 2, 1000, 1.0, 64)
    assert mask.blocks.shape == (1, 2, 16, 16)
    assert bool(mask.blocks.all())
    assert mask.density() == 1.0


def test_random_block_mask_non_square_clamps_diagonal():
    mask = random_block_mask(1, 4, (1024, 512), 0.25, (128, 128), generator=torch.Generator().manual_seed(0))
    assert mask.num_blocks == (8, 4)
    rows = torch.arange(8)
    diagonal = rows.clamp(max=3)
    assert mask.blocks[..., rows, diagonal].all()
    # One block per row, and it is the (clamped) diagonal.
    assert int(mask.blocks.sum()) == 4 * 8


def test_random_block_mask_is_random_and_seeded():
    make = lambda seed: random_block_mask(1, 4, 2048, 0.25, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(make(3).blocks, make(3).blocks)
    assert not torch.equal(make(3).blocks, make(4).blocks)


@pytest.mark.parametrize("density", [0.0, -0.5, 1.5])
def test_random_block_mask_rejects_bad_density(density):
    with pytest.raises(ValueError, match=r"density must be a fraction in \(0, 1\]"):
        random_block_mask(1, 1, 256, density)


# --------------------------------------------------------------------------------------------------
# run_attention_benchmark
# --------------------------------------------------------------------------------------------------
def test_run_reference_rows_have_timings_and_speedups():
    densities = [1.0, 0.5, 0.25]
    rows = run_attention_benchmark(**TINY, densities=densities, backends=["reference"])
    dense = [row for row in rows if row["kind"] == "dense"]
    sparse = [row for row in rows if row["kind"] == "block_sparse"]
    assert [row["backend"] for row in dense] == ["sdpa"]  # CPU: dense SDPA is the only baseline
    assert dense[0]["ms"] > 0 and dense[0]["skipped"] is None
    assert [row["density_requested"] for row in sparse] == densities
    n_kv_blocks = 256 // 32
    for row in sparse:
        assert row["backend"] == "reference" and row["skipped"] is None
        assert (row["seq_len"], row["head_dim"], row["heads"], row["batch"]) == (256, 32, 2, 1)
        assert row["dtype"] == "float32" and row["block_size"] == [32, 32]
        assert abs(row["density"] - row["density_requested"]) <= 0.5 / n_kv_blocks
        assert row["ms"] > 0
        assert row["dense_sdpa_ms"] == dense[0]["ms"]
        assert row["best_dense_name"] == "sdpa" and row["best_dense_ms"] == dense[0]["ms"]
        assert row["paired_sdpa_ms"] > 0  # SDPA timed alternately with this backend
        assert row["speedup_vs_sdpa"] > 0
        assert row["speedup_vs_best_dense"] == pytest.approx(dense[0]["ms"] / row["ms"])
        assert row["ideal_speedup"] == pytest.approx(1 / row["density"])
        assert row["efficiency"] == pytest.approx(row["speedup_vs_sdpa"] * row["density"])
        flops = 4 * 1 * 2 * 256 * 256 * 32
        assert row["tflops_dense_equivalent"] == pytest.approx(flops / (row["ms"] * 1e-3) / 1e12)
        assert row["tflops_actual"] == pytest.approx(row["tflops_dense_equivalent"] * row["density"])
    json.dumps(rows)  # rows are plain JSON


def test_lse_rows_and_the_auto_backend():
    rows = run_attention_benchmark(**TINY, densities=[1.0, 0.5], backends=["gather", "flex", "auto"], lse=True)
    sparse = {(r["backend"], r["return_lse"], r["density_requested"]): r for r in rows if r["kind"] == "block_sparse"}
    assert len(sparse) == 12
    for density in (1.0, 0.5):
        for backend in ("gather", "auto"):
            assert sparse[(backend, True, density)]["skipped"] is None and sparse[(backend, True, density)]["ms"] > 0
        # compiled flex on a CPU cannot return the LSE: the row says so instead of timing something else
        assert sparse[("flex", True, density)]["skipped"] is not None
    assert "gather +lse" in format_table(rows) and "auto" in format_table(rows)


def test_run_skips_reference_over_memory_limit():
    rows = run_attention_benchmark(**TINY, densities=[0.5], backends=["reference"], max_reference_bytes=1024)
    (row,) = [row for row in rows if row["kind"] == "block_sparse"]
    assert row["backend"] == "reference"
    assert "max_reference_bytes" in row["skipped"]
    assert row["ms"] is None and row["speedup_vs_sdpa"] is None and row["tflops_dense_equivalent"] is None
    assert row["density"] == pytest.approx(0.5)
    # The dense baseline still ran.
    (dense,) = [row for row in rows if row["kind"] == "dense"]
    assert dense["ms"] > 0 and row["dense_sdpa_ms"] == dense["ms"]


def test_run_records_unsupported_call_as_skipped():
    # The reference backend takes fp64; flex rejects it in block_sparse_attention with a ValueError,
    # before any compilation.
    rows = run_attention_benchmark(**{**TINY, "dtype": torch.float64}, densities=[1.0], backends=["flex"])
    (row,) = [row for row in rows if row["kind"] == "block_sparse"]
    assert row["backend"] == "flex"
    assert row["ms"] is None and row["speedup_vs_sdpa"] is None
    if backend_status("cpu")["flex"] is None:
        assert "cannot run this call" in row["skipped"] and "float64" in row["skipped"]
    else:
        assert row["skipped"] == backend_status("cpu")["flex"]


def test_a_backend_that_fails_at_run_time_is_recorded_and_the_sweep_goes_on(monkeypatch):
    import dataclasses

    from dit_sparse.kernels import BACKENDS

    def broken(*args):
        raise RuntimeError("inductor could not compile the template\nlong traceback")

    monkeypatch.setitem(BACKENDS, "gather", dataclasses.replace(BACKENDS["gather"], forward=broken))
    rows = run_attention_benchmark(**TINY, densities=[0.5], backends=["gather", "reference"])
    by_backend = {row["backend"]: row for row in rows if row["kind"] == "block_sparse"}
    assert by_backend["gather"]["skipped"] == "failed: RuntimeError: inductor could not compile the template"
    assert by_backend["gather"]["ms"] is None
    assert by_backend["reference"]["skipped"] is None and by_backend["reference"]["ms"] > 0


def test_quant_rows_time_the_quantized_calls_at_the_same_mask():
    from dit_sparse.bench.attention import _quant_variants

    # Triton runs here under the interpreter (tests/conftest.py), so only tiny shapes.
    settings = {**TINY, "seq_lens": [64], "head_dims": [32], "heads": 1, "repeats": 1, "block_size": (32, 32)}
    rows = run_attention_benchmark(**settings, densities=[0.5], backends=["reference", "triton"], quant=["int8"])
    sparse = [(row["backend"], row["quant"], row["prequantized"]) for row in rows if row["kind"] == "block_sparse"]
    assert sparse == [
        ("reference", None, False),
        ("reference", "int8", False),
        ("triton", None, False),
        ("triton", "int8", False),
        ("triton", "int8", True),
    ]
    assert _quant_variants("flex", ["int8"]) == []  # flex has no quantized attention: no extra rows
    for row in rows:
        if row["quant"] is not None:
            assert row["skipped"] is None and row["ms"] > 0 and row["density"] == pytest.approx(0.5)
            assert row["speedup_vs_unquantized"] == pytest.approx(
                next(r["ms"] for r in rows if r["backend"] == row["backend"] and r["quant"] is None) / row["ms"]
            )
    table = format_table(rows)
    assert "triton int8 pre-quantized" in table and "reference int8 " in table
    assert "triton int8 at N=64, D=32, density=0.500:" in table and "the unquantized triton (float32)" in table
    with pytest.raises(ValueError, match="unknown quant mode 'int2'"):
        run_attention_benchmark(**settings, densities=[0.5], backends=["reference"], quant=["int2"])


def test_run_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown backends"):
        run_attention_benchmark(**TINY, densities=[1.0], backends=["nope"])
    with pytest.raises(ValueError, match="densities must be fractions"):
        run_attention_benchmark(**TINY, densities=[50], backends=["reference"])


# --------------------------------------------------------------------------------------------------
# format_table
# --------------------------------------------------------------------------------------------------
def test_format_table_lists_every_backend_and_skip_reason():
    rows = run_attention_benchmark(**TINY, densities=[1.0, 0.5], backends=["reference"])
    rows += run_attention_benchmark(**TINY, densities=[0.25], backends=["reference"], max_reference_bytes=1024)
    table = format_table(rows)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["backend", "N", "D", "density"]
    body = [line for line in lines[2:] if not line.startswith("best dense")]
    assert len(body) == len(rows)
    assert {line.split()[0] for line in body} == {"sdpa", "reference"}
    skipped = [line for line in body if "skipped:" in line]
    assert len(skipped) == 1 and "max_reference_bytes" in skipped[0] and "0.250" in skipped[0]
    # Timed rows are aligned: every one has the same width as the header.
    timed = [line for line in body if "skipped:" not in line]
    assert {len(line) for line in timed} == {len(lines[0])}
    assert "best dense at N=256, D=32: sdpa" in table


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
def test_main_quick_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["--quick", "--no-progress", "--densities", "100,25", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"environment", "settings", "results"}
    assert report["settings"]["seq_lens"] == [512] and report["settings"]["backends"] == ["reference"]
    assert report["settings"]["densities"] == [1.0, 0.25]
    assert report["environment"]["device"] == "cpu"
    results = report["results"]
    assert [row["backend"] for row in results] == ["sdpa", "reference", "reference"]
    assert all(row["ms"] > 0 for row in results)
    printed = capsys.readouterr().out
    assert "reference" in printed and "sdpa" in printed


def test_environment_has_versions_and_date():
    info = environment_info("cpu")
    assert info["torch"] is not None and info["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert info["date"][:2] == "20" and "T" in info["date"]
    assert info["torch_threads"] == torch.get_num_threads()
    assert info["cuda_capability"] is None
    assert info["git_commit"] is None or len(info["git_commit"]) == 40
    json.dumps(info)


@pytest.mark.parametrize(
    "argv",
    [
        ["--densities", "abc"],
        ["--densities", "0,50"],
        ["--backends", "nope"],
        ["--block-size", "100"],
        ["--heads", "0"],
        ["--repeats", "x"],
        ["--device", "tpu"],
        ["--quant", "int3"],
    ],
)
def test_main_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as excinfo:
        main([*argv, "--quick"])
    assert excinfo.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100,50,25,10,5", [1.0, 0.5, 0.25, 0.1, 0.05]),
        ("1,0.5,0.25,0.1,0.05", [1.0, 0.5, 0.25, 0.1, 0.05]),
        ("50%,0.5", [0.5, 0.5]),
        ("1%", [0.01]),
    ],
)
def test_parse_densities_percentages_or_fractions(text, expected):
    assert parse_densities(text) == pytest.approx(expected)


def test_paired_timing_reports_each_side_and_their_ratio():
    from dit_sparse.bench.attention import _time_paired_ms

    calls = []
    fast = lambda: (calls.append("fast"), time.sleep(0.002))
    slow = lambda: (calls.append("slow"), time.sleep(0.008))
    fast_ms, slow_ms, ratio = _time_paired_ms(fast, slow, torch.device("cpu"), warmup=1, repeats=5)
    assert calls == ["fast", "slow"] * 6  # alternated, warmup included
    assert 2 <= fast_ms < slow_ms and slow_ms >= 8
    assert 1.2 < ratio < 4.5  # ~4 when sleeping is exact; overheads only pull it toward 1
