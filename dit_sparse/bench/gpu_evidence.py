"""One-shot GPU evidence: the environment record and the merged report of ``benchmarks/gpu_evidence.sh``.

The shell script runs each stage (environment, kernel sweep, end-to-end transformer, GPU-only tests) in its
own process under its own time limit and writes, into one work folder, each stage's JSON and log and a line
per stage in ``stages.tsv`` (name, exit code, seconds, limit). This module writes the environment record
(``env``) and merges that folder into one JSON and a markdown summary (``report``), so the shell stays a
list of commands. A stage that failed or ran out of time is recorded with its status and the end of its log;
the report is written whatever happened.

From the kernel sweep the report also derives, per (dtype, head dim), which block-sparse backend was fastest
over the sparse cases, and suggests an entry for ``dit_sparse/kernels/gpu_backend_table.json`` where that is
not the one ``auto`` already tries first (see :mod:`dit_sparse.kernels.backend_table`).

Example:
    >>> from dit_sparse.bench.gpu_evidence import gpu_slug
    >>> gpu_slug("NVIDIA H100 80GB HBM3")
    'nvidia-h100-80gb-hbm3'
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# A suggested table entry must beat auto's current first choice by more than run-to-run noise.
SUGGEST_MIN_SPEEDUP = 1.05
LOG_TAIL_LINES = 40
_TIMEOUT_CODES = (124, 137)


# --------------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------------
def _nvidia_smi() -> dict[str, Any]:
    """``nvidia-smi``'s summary and a CSV of the fields a timing depends on; ``None`` values without it."""
    if shutil.which("nvidia-smi") is None:
        return {"summary": None, "query": None, "reason": "nvidia-smi is not on PATH"}
    fields = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu"
    out: dict[str, Any] = {}
    for key, argv in (
        ("summary", ["nvidia-smi"]),
        ("query", ["nvidia-smi", f"--query-gpu={fields}", "--format=csv"]),
    ):
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
            out[key] = result.stdout.strip() or result.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as error:
            out[key] = f"{type(error).__name__}: {error}"
    return out


def collect_environment(device: str) -> dict[str, Any]:
    """What the evidence depends on: versions, the device, nvidia-smi, backend availability and the table."""
    import torch

    from ..kernels.backend_table import load_backend_table
    from ..kernels.flex import flash_attn_cute_available, flex_has_flash_backend
    from ..utils import package_versions
    from .attention import environment_info

    return {
        **environment_info(device),
        "packages": package_versions(),
        "nvidia_smi": _nvidia_smi(),
        "torch_cuda_available": torch.cuda.is_available(),
        "flex_flash": {
            "torch_has_backend_flash": flex_has_flash_backend(),
            "flash_attn_cute_importable": flash_attn_cute_available(),
        },
        "gpu_backend_table": list(load_backend_table()),
    }


def gpu_slug(name: str) -> str:
    """``"NVIDIA H200"`` -> ``"nvidia-h200"``: lower case, runs of other characters as one dash."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown-device"


# --------------------------------------------------------------------------------------------------
# reading the work folder
# --------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> tuple[Any, str | None]:
    if not path.is_file():
        return None, f"{path.name} was not written"
    try:
        return json.loads(path.read_text()), None
    except json.JSONDecodeError as error:
        return None, f"{path.name} is not JSON: {error}"


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str | None:
    if not path.is_file():
        return None
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def read_junit(path: Path) -> dict[str, Any]:
    """Counts and per-test outcomes of a pytest ``--junitxml`` file (skip and failure messages included)."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    cases = []
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, 0))
        for case in suite.iter("testcase"):
            outcome, message = "passed", None
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                    message = (node.get("message") or node.text or "").strip().splitlines()[0:1]
                    message = message[0] if message else ""
                    break
            cases.append(
                {
                    "test": f"{case.get('classname', '')}::{case.get('name', '')}",
                    "outcome": outcome,
                    "message": message,
                    "seconds": float(case.get("time", 0) or 0),
                }
            )
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "cases": cases}


def _stage_status(exit_code: int) -> str:
    if exit_code == 0:
        return "ok"
    return "timeout" if exit_code in _TIMEOUT_CODES else "failed"


def read_stages(work_dir: Path) -> dict[str, dict[str, Any]]:
    """Each stage of ``stages.tsv`` with its status, time, limit, result and (unless ok) its log's end."""
    stages: dict[str, dict[str, Any]] = {}
    tsv = work_dir / "stages.tsv"
    lines = tsv.read_text().splitlines() if tsv.is_file() else []
    for line in lines:
        if not line.strip():
            continue
        name, exit_code, seconds, limit, *result_file = line.split("\t")
        exit_code = int(exit_code)
        entry: dict[str, Any] = {
            "status": _stage_status(exit_code),
            "exit_code": exit_code,
            "seconds": round(float(seconds), 1),
            "limit_seconds": int(limit),
            "result": None,
        }
        result_path = work_dir / result_file[0] if result_file and result_file[0] else None
        if result_path is not None:
            if result_path.suffix == ".xml":
                entry["result"] = read_junit(result_path) if result_path.is_file() else None
                problem = None if result_path.is_file() else f"{result_path.name} was not written"
            else:
                entry["result"], problem = _read_json(result_path)
            if problem is not None and entry["status"] == "ok":
                entry["status"], entry["problem"] = "failed", problem
        if entry["status"] != "ok":
            entry["log_tail"] = _log_tail(work_dir / f"{name}.log")
        stages[name] = entry
    return stages


# --------------------------------------------------------------------------------------------------
# backend table suggestions
# --------------------------------------------------------------------------------------------------
def suggest_backend_table(rows: Sequence[dict[str, Any]], gpu_name: str, evidence: str) -> list[dict[str, Any]]:
    """Per (dtype, head dim) of a kernel sweep: the fastest block-sparse backend over the sparse cases.

    Only unquantized rows without the LSE, at densities below 1, count; ``auto`` and ``reference`` are not
    candidates, and a backend must be timed at every (N, density) of the group to be one. Backends are ranked
    by the geometric mean of their times. ``entry`` is a ready ``gpu_backend_table.json`` entry when the
    fastest is not the backend ``auto`` tries first today and beats it by more than ``SUGGEST_MIN_SPEEDUP``.
    """
    import torch

    from ..kernels.backend_table import cuda_backend_order

    groups: dict[tuple[str, int], dict[str, dict[tuple[int, float], float]]] = {}
    cases: dict[tuple[str, int], set[tuple[int, float]]] = {}
    for row in rows:
        if row.get("kind") != "block_sparse" or row.get("quant") or row.get("return_lse"):
            continue
        if row["backend"] in ("auto", "reference") or row["density_requested"] >= 1:
            continue
        key, case = (row["dtype"], row["head_dim"]), (row["seq_len"], row["density_requested"])
        cases.setdefault(key, set()).add(case)
        if row.get("ms") is not None:
            groups.setdefault(key, {}).setdefault(row["backend"], {})[case] = row["ms"]
    suggestions = []
    for (dtype_name, head_dim), wanted in sorted(cases.items()):
        timed = {name: times for name, times in groups.get((dtype_name, head_dim), {}).items() if set(times) == wanted}
        if not timed:
            continue
        geomean = {
            name: math.exp(sum(math.log(ms) for ms in times.values()) / len(times)) for name, times in timed.items()
        }
        fastest = min(geomean, key=geomean.get)
        order = cuda_backend_order(gpu_name, getattr(torch, dtype_name), head_dim)
        default = next((name for name in order if name in geomean), None)
        speedup = geomean[default] / geomean[fastest] if default is not None else None
        entry = None
        if default is not None and fastest != default and speedup > SUGGEST_MIN_SPEEDUP:
            entry = {"gpu": gpu_name, "dtype": dtype_name, "head_dim": head_dim, "backend": fastest,
                     "evidence": evidence, "speedup_over_default": round(speedup, 3)}  # fmt: skip
        suggestions.append(
            {
                "gpu": gpu_name,
                "dtype": dtype_name,
                "head_dim": head_dim,
                "cases": len(wanted),
                "geomean_ms": {name: round(ms, 4) for name, ms in sorted(geomean.items(), key=lambda kv: kv[1])},
                "fastest": fastest,
                "auto_first_choice": default,
                "speedup_over_auto_first_choice": None if speedup is None else round(speedup, 3),
                "entry": entry,
            }
        )
    return suggestions


# --------------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------------
def build_report(work_dir: Path, mode: str, result_name: str) -> dict[str, Any]:
    """The merged evidence: environment, every stage's status and result, and backend table suggestions."""
    environment, problem = _read_json(work_dir / "env.json")
    stages = read_stages(work_dir)
    setup, _ = _read_json(work_dir / "setup.json")
    gpu_name = (environment or {}).get("device_name") or "unknown device"
    on_cuda = (environment or {}).get("device", "").startswith("cuda")
    kernel_rows = [
        row
        for name, stage in stages.items()
        if name.startswith("kernels") and isinstance(stage["result"], dict)
        for row in stage["result"].get("results", [])
    ]
    return {
        "title": f"GPU evidence: {gpu_name}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "mode": mode,
        "gpu_name": gpu_name,
        "environment": environment,
        "environment_problem": problem,
        "setup": setup,
        "stages": stages,
        "backend_table_suggestions": suggest_backend_table(kernel_rows, gpu_name, result_name) if on_cuda else [],
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:.3f}" if value < 100 else f"{value:.1f}")


def _kernel_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for N in sorted({row["seq_len"] for row in rows}):
        at_n = [row for row in rows if row["seq_len"] == N]
        first = at_n[0]
        out += ["", f"### N = {N:,}, H = {first['heads']}, D = {first['head_dim']}, {first['dtype']}", ""]
        dense = [row for row in at_n if row["kind"] == "dense"]
        out.append(
            "dense: "
            + ", ".join(
                f"{row['backend']} {_ms(row['ms'])} ms" if row["ms"] is not None else f"{row['backend']} skipped"
                for row in dense
            )
            + (f" (best: {first['best_dense_name']})" if first.get("best_dense_name") else "")
        )
        sparse = [row for row in at_n if row["kind"] == "block_sparse" and not row.get("quant")]
        backends = list(dict.fromkeys(row["backend"] for row in sparse))
        out += ["", "| density | " + " | ".join(backends) + " |", "|---" * (len(backends) + 1) + "|"]
        for density in sorted({row["density_requested"] for row in sparse}):
            cells = []
            for name in backends:
                row = next((r for r in sparse if r["backend"] == name and r["density_requested"] == density), None)
                if row is None or row["ms"] is None:
                    cells.append("skipped" if row is not None else "-")
                else:
                    x = row.get("speedup_vs_sdpa")
                    cells.append(f"{_ms(row['ms'])} ms ({x:.2f}x)" if x is not None else f"{_ms(row['ms'])} ms")
            out.append(f"| {density:g} | " + " | ".join(cells) + " |")
        reasons = {(row["backend"], row["skipped"]) for row in dense + sparse if row.get("skipped")}
        if reasons:
            out += [""] + [f"- {name} skipped: {reason}" for name, reason in sorted(reasons)]
    out += ["", "Cells: median ms (speedup over dense SDPA timed alternately with it in the same run)."]
    return out


def _transformer_section(result: dict[str, Any]) -> list[str]:
    settings = result.get("settings", {})
    out = [
        "",
        f"{settings.get('model')} at {settings.get('resolution')}, {settings.get('steps')} steps, "
        f"layers {settings.get('layers') or 'all'}, block {settings.get('block_size')}, "
        f"backend {settings.get('backend')}, {settings.get('dtype')}",
        "",
        "| method | s/step | speedup | mean density | attention share |",
        "|---|---|---|---|---|",
    ]
    for row in result.get("rows", []):
        density = row.get("mean_density")
        share = row.get("attention_share")
        out.append(
            f"| {row['method']} | {row['seconds_per_step']:.3f} | {row['speedup']:.2f}x | "
            f"{'-' if density is None else f'{density:.3f}'} | {'-' if share is None else f'{share:.2f}'} |"
        )
    return out


def _tests_section(result: dict[str, Any]) -> list[str]:
    out = [
        "",
        f"{result['passed']} passed, {result['failures']} failed, {result['errors']} errors, "
        f"{result['skipped']} skipped (a skipped test is not a passing one)",
    ]
    for case in result["cases"]:
        if case["outcome"] != "passed":
            out.append(f"- {case['outcome']}: `{case['test']}`: {case['message']}")
    return out


def render_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: environment, stage table, kernel sweep, end to end, tests, suggestions."""
    env = report["environment"] or {}
    lines = [f"# {report['title']} ({report['date']})", ""]
    if report["mode"] != "gpu":
        where = env.get("device", "?")
        lines += [f"**{report['mode']}**: tiny sizes on {where}; checks the pipeline, measures nothing.", ""]
    lines += [
        f"- device: {env.get('device_name')} ({env.get('device')}, capability "
        f"{env.get('cuda_capability') or env.get('cpu_capability')})",
        f"- torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), triton {env.get('triton')}, "
        f"diffusers {env.get('diffusers')}, python {env.get('python')}",
        f"- commit {env.get('git_commit')}{' (with local changes)' if env.get('git_dirty') else ''}",
        f"- flex-flash: {(env.get('backend_status') or {}).get('flex-flash') or 'available'}",
    ]
    query = (env.get("nvidia_smi") or {}).get("query")
    if query:
        lines += ["", "```", query, "```"]
    if report.get("environment_problem"):
        lines.append(f"- environment record: {report['environment_problem']}")
    lines += ["", "## Stages", "", "| stage | status | seconds | limit |", "|---|---|---|---|"]
    for name, stage in report["stages"].items():
        lines.append(f"| {name} | {stage['status']} | {stage['seconds']} | {stage['limit_seconds']} |")
    kernel_rows = [
        row
        for name, stage in report["stages"].items()
        if name.startswith("kernels") and isinstance(stage["result"], dict)
        for row in stage["result"].get("results", [])
    ]
    if kernel_rows:
        lines += ["", "## Kernel sweep", *_kernel_section(kernel_rows)]
    transformer = report["stages"].get("transformer", {}).get("result")
    if isinstance(transformer, dict):
        lines += ["", "## End to end (random weights, real architecture)", *_transformer_section(transformer)]
    tests = report["stages"].get("tests", {}).get("result")
    if isinstance(tests, dict):
        lines += ["", "## GPU tests", *_tests_section(tests)]
    lines += ["", "## Fastest backend per case (for dit_sparse/kernels/gpu_backend_table.json)", ""]
    if not report["backend_table_suggestions"]:
        lines.append("No suggestion: not a CUDA run, or no backend was timed at every sparse case.")
    for s in report["backend_table_suggestions"]:
        ranking = ", ".join(f"{name} {_ms(ms)} ms" for name, ms in s["geomean_ms"].items())
        lines.append(
            f"- {s['dtype']}, D = {s['head_dim']}, {s['cases']} sparse cases, geometric mean: {ranking}. "
            f"Fastest: {s['fastest']}; auto tries {s['auto_first_choice']} first."
        )
        if s["entry"] is not None:
            lines += ["", "  Suggested entry:", "", "  ```json", "  " + json.dumps(s["entry"]), "  ```"]
        else:
            lines.append(f"  No entry needed (auto's first choice is fastest, or within {SUGGEST_MIN_SPEEDUP}x).")
    for name, stage in report["stages"].items():
        if stage.get("log_tail"):
            lines += ["", f"## {name}: {stage['status']}, end of its log", "", "```", stage["log_tail"], "```"]
    return "\n".join(lines) + "\n"


def write_report(work_dir: Path, out_dir: Path, mode: str) -> tuple[Path, Path]:
    """Write ``<date>-<gpu slug>.json`` and ``.md`` into ``out_dir``; returns both paths."""
    environment, _ = _read_json(work_dir / "env.json")
    name = (environment or {}).get("device_name") or "unknown device"
    stem = f"{datetime.now(timezone.utc).strftime('%Y-%m-%d')}-{gpu_slug(name)}"
    if mode != "gpu":
        stem += f"-{mode}"
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    report = build_report(work_dir, mode, str(json_path))
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(render_markdown(report))
    return json_path, md_path


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dit_sparse.bench.gpu_evidence", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env", help="write the environment record")
    env.add_argument("--device", default="cuda")
    env.add_argument("--out", type=Path, required=True)
    report = sub.add_parser("report", help="merge a work folder into <date>-<gpu>.json and .md")
    report.add_argument("--work-dir", type=Path, required=True)
    report.add_argument("--out-dir", type=Path, required=True)
    report.add_argument("--mode", choices=["gpu", "dry-run"], default="gpu")
    args = parser.parse_args(argv)
    if args.command == "env":
        record = collect_environment(args.device)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"device {record['device']}: {record['device_name']} (capability {record['cuda_capability']})")
        print(f"torch {record['torch']} (CUDA {record['torch_cuda']}), triton {record['triton']}")
        for backend, reason in record["backend_status"].items():
            print(f"  {backend:<10} {'available' if reason is None else 'unavailable: ' + reason}")
        return 0
    json_path, md_path = write_report(args.work_dir, args.out_dir, args.mode)
    print(md_path.read_text())
    print(f"wrote {json_path}\nwrote {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
