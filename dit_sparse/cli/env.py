"""``dit-sparse env``: versions, devices, and which attention backends run here and why not."""

from __future__ import annotations

import argparse
import json
import os
import platform

import torch

import dit_sparse
from dit_sparse.utils import package_versions


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "env",
        help="show versions, devices and available attention backends",
        description="Show package versions, devices, and which attention backends can run (and why not).",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def collect() -> dict:
    """The report as a dict (also used by benchmarks to record where they ran)."""
    devices: list[dict] = [
        {
            "device": "cpu",
            "name": platform.processor() or platform.machine(),
            "capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
        }
    ]
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(index)
        devices.append(
            {
                "device": f"cuda:{index}",
                "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 2**30, 1),
            }
        )
    backends = {}
    for entry in devices:
        device = torch.device(entry["device"])
        backends[entry["device"]] = dit_sparse.backend_status(device)
    return {
        "dit_sparse": dit_sparse.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0") == "1",
        "devices": devices,
        "backends": backends,
    }


def format_report(report: dict) -> str:
    lines = [
        f"dit-sparse {report['dit_sparse']}  (Python {report['python']}, {report['platform']})",
        "",
        "packages:",
    ]
    for name, version in report["packages"].items():
        lines.append(f"  {name:<13} {version or 'not installed'}")
    lines += ["", "devices:"]
    for entry in report["devices"]:
        extra = f", {entry['memory_gib']} GiB" if "memory_gib" in entry else f", {entry['threads']} threads"
        lines.append(f"  {entry['device']:<7} {entry['name']} (capability {entry['capability']}{extra})")
    for device, status in report["backends"].items():
        lines += ["", f"attention backends on {device}:"]
        for name, reason in status.items():
            lines.append(f"  {name:<10} {'available' if reason is None else 'unavailable: ' + reason}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = collect()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
