"""benchmarks/gpu_evidence.sh in its CPU dry run, and the report that merges its stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dit_sparse.bench.gpu_evidence import build_report, gpu_slug, render_markdown, suggest_backend_table
from dit_sparse.kernels.backend_table import parse_backend_table

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_writes_every_stage_ok_and_the_summary(tmp_path):
    out_dir, device_out = tmp_path / "results", tmp_path / "device_out"
    device_out.mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(device_out)}
    env.pop("TRITON_INTERPRET", None)  # the script sets it for the stage that needs it
    result = subprocess.run(
        ["bash", "benchmarks/gpu_evidence.sh", "--dry-run", "--out-dir", str(out_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (json_path,) = out_dir.glob("*-dry-run.json")
    (md_path,) = out_dir.glob("*-dry-run.md")
    report = json.loads(json_path.read_text())
    assert report["mode"] == "dry-run"
    assert set(report["stages"]) == {"env", "kernels_n512", "transformer", "tests"}
    for name, stage in report["stages"].items():
        assert stage["status"] == "ok", (name, stage)
        assert 0 < stage["seconds"] <= stage["limit_seconds"]
    assert report["environment"]["device"] == "cpu" and report["setup"]["status"] == "skipped"

    rows = report["stages"]["kernels_n512"]["result"]["results"]
    timed = {row["backend"] for row in rows if row["kind"] == "block_sparse" and row["ms"] is not None}
    assert {"triton", "gather", "auto"} <= timed
    flash = [row for row in rows if row["backend"] == "flex-flash"]
    assert flash and all("needs a CUDA GPU" in row["skipped"] for row in flash)

    methods = [row["method"] for row in report["stages"]["transformer"]["result"]["rows"]]
    assert methods == [
        "vanilla (no dit-sparse)",
        "dense (through dit-sparse)",
        "radial",
        "sparse_vdit",
        "adaspa:search_steps=[0]",
    ]
    tests = report["stages"]["tests"]["result"]
    assert tests["failures"] == tests["errors"] == 0 and tests["skipped"] > 0  # GPU tests skip on a CPU

    summary = md_path.read_text()
    assert "## Stages" in summary and "| kernels_n512 | ok |" in summary and "## End to end" in summary
    assert sorted(p.name for p in device_out.iterdir()) == sorted(
        [json_path.name, md_path.name, "gpu_evidence_logs.txt"]
    )


def _row(backend, N, density, ms):
    return {"kind": "block_sparse", "backend": backend, "seq_len": N, "head_dim": 128, "dtype": "bfloat16",
            "density_requested": density, "ms": ms, "quant": None, "return_lse": False}  # fmt: skip


def test_suggestion_names_the_fastest_backend_and_a_valid_table_entry():
    rows = [
        _row(name, N, d, base * d * scale)
        for N, base in ((32760, 10.0), (75600, 50.0))
        for d in (0.1, 0.5)
        for name, scale in (("triton", 1.0), ("flex", 1.4), ("flex-flash", 0.7))
    ]
    rows += [_row("auto", 32760, 0.1, 0.1), _row("triton", 32760, 1.0, 0.1)]  # neither counts
    (suggestion,) = suggest_backend_table(rows, "NVIDIA H200", "benchmarks/results/x.json")
    assert suggestion["fastest"] == "flex-flash" and suggestion["auto_first_choice"] == "triton"
    assert suggestion["cases"] == 4 and list(suggestion["geomean_ms"]) == ["flex-flash", "triton", "flex"]
    assert abs(suggestion["speedup_over_auto_first_choice"] - 1 / 0.7) < 1e-3
    # the suggested entry is one the table accepts as it stands
    (entry,) = parse_backend_table({"entries": [suggestion["entry"]]})
    assert entry["backend"] == "flex-flash" and entry["gpu"] == "NVIDIA H200" and entry["head_dim"] == 128


def test_no_entry_when_auto_already_picks_the_fastest_or_a_backend_missed_a_case():
    rows = [_row("triton", 32760, d, d) for d in (0.1, 0.5)] + [_row("flex", 32760, d, 2 * d) for d in (0.1, 0.5)]
    (suggestion,) = suggest_backend_table(rows, "NVIDIA H200", "x.json")
    assert suggestion["fastest"] == "triton" and suggestion["entry"] is None
    rows += [_row("flex-flash", 32760, 0.1, 0.01), _row("flex-flash", 32760, 0.5, None)]  # failed at 0.5
    (suggestion,) = suggest_backend_table(rows, "NVIDIA H200", "x.json")
    assert "flex-flash" not in suggestion["geomean_ms"] and suggestion["entry"] is None


def test_failed_and_timed_out_stages_are_recorded_with_their_log(tmp_path):
    (tmp_path / "env.json").write_text(json.dumps({"device": "cuda", "device_name": "NVIDIA H200"}))
    (tmp_path / "kernels_n32760.log").write_text("compiling\n" * 50 + "Killed\n")
    (tmp_path / "transformer.log").write_text("Traceback\nRuntimeError: CUDA out of memory\n")
    (tmp_path / "tests.log").write_text("")
    (tmp_path / "stages.tsv").write_text(
        "kernels_n32760\t124\t85.01\t85\tkernels_n32760.json\n"
        "transformer\t1\t12.5\t170\ttransformer.json\n"
        "tests\t0\t3.2\t70\ttests.xml\n"
    )
    report = build_report(tmp_path, "gpu", "x.json")
    stages = report["stages"]
    assert stages["kernels_n32760"]["status"] == "timeout" and stages["kernels_n32760"]["log_tail"].endswith("Killed")
    assert stages["transformer"]["status"] == "failed" and "out of memory" in stages["transformer"]["log_tail"]
    assert stages["tests"]["status"] == "failed" and stages["tests"]["problem"] == "tests.xml was not written"
    summary = render_markdown(report)
    assert "| kernels_n32760 | timeout | 85.0 | 85 |" in summary and "## transformer: failed" in summary


def test_gpu_slug():
    assert gpu_slug("NVIDIA H200") == "nvidia-h200"
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_slug("  ") == "unknown-device"
