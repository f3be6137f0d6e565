"""Long-run check: one process generating many times in a row, switching sizes, guidance and methods.

A library that sits inside a long-running generation server must not leak, must not serve a stale mask, and
must leave nothing behind when it is removed. This runs the embedded model ``rounds`` times in one process,
cycling through every (resolution, frame count, guidance on/off) and switching the method between runs
(apply over the previous one, replace, or remove and run dense), and checks after each run:

- the output equals that of a fresh pipeline in a fresh process with the same settings and seed (computed
  once per distinct setting in a child process), so no mask, permutation or schedule of an earlier run
  leaks into a later one;
- after :func:`dit_sparse.remove_sparse_attention` no dit-sparse hook or processor is left on the transformer;
- the tensors alive after each run (a leak of masks or buffers grows this), and resident memory
  (``/proc/self/statm``) after each run; the report gives it after rounds 1, 10 and the last,
  and the growth of its peak after the first cycle through every setting over the peak within that cycle (it
  moves with the setting: a larger video needs more).

``python benchmarks/long_run.py --rounds 30`` is the run on the embedded model (under a minute on two cores at
the default tiny sizes, most of it the fresh-process references); ``--rounds 144 --no-fresh-check`` also checks
that the live tensors repeat exactly from one period of the schedule (48 runs) to the next. The test suite runs
it with fewer rounds.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

# Settings the run cycles through: (height, width) in pixels, frame counts, guidance (1.0 = no CFG).
SIZES = ((64, 64), (64, 96), (96, 64))
FRAMES = (5, 9)
GUIDANCE = (5.0, 1.0)
# Methods the run switches among ("dense" = remove_sparse_attention); each with settings that make it sparse
# at these sizes.
METHODS: dict[str, dict[str, Any]] = {
    "radial": {"method": "radial", "block_size": 16, "decay_factor": 0.5},
    "sparsed": {"method": "sparsed", "block_size": 16, "dense_steps": 1, "fraction": 0.3},
    "svg": {"method": "svg", "block_size": 16, "sparsity": 0.3},
    "dense": {},
}
STEPS = 3
PROMPT = "a red circle moving right on a dark background"


@dataclass(frozen=True)
class RunSetting:
    height: int
    width: int
    frames: int
    guidance: float
    method: str
    seed: int


# The schedule repeats itself exactly every PERIOD runs (settings, methods and seeds).
PERIOD = 48


def schedule(rounds: int) -> list[RunSetting]:
    """``rounds`` settings: every (size, frames, guidance) in turn, the method changing every run."""
    grid = list(itertools.product(SIZES, FRAMES, GUIDANCE))
    methods = list(METHODS)
    runs = []
    for i in range(rounds):
        (height, width), frames, guidance = grid[i % len(grid)]
        method = methods[(i + i // len(grid)) % len(methods)]  # a different one each run, shifted each cycle
        runs.append(RunSetting(height, width, frames, guidance, method, seed=i % 3))
    return runs


def resident_bytes() -> int:
    """Resident memory of this process now (Linux ``/proc/self/statm``; elsewhere psutil if installed, else 0)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        try:
            import psutil

            return psutil.Process().memory_info().rss
        except ImportError:
            return 0


def live_tensors() -> int:
    """Tensors alive in this process (after a garbage collection): flat across rounds unless something leaks."""
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def generate(pipe, setting: RunSetting) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(setting.seed)
    out = pipe(
        PROMPT,
        height=setting.height,
        width=setting.width,
        num_frames=setting.frames,
        guidance_scale=setting.guidance,
        num_inference_steps=STEPS,
        generator=generator,
        output_type="np",
    )
    return np.asarray(out.frames[0])


def leftover_hooks(transformer: torch.nn.Module) -> list[str]:
    """dit-sparse hooks, processors or attention backends still on ``transformer`` (none after a clean removal)."""
    found = []
    for name, module in transformer.named_modules():
        where = name or "transformer"
        registry = getattr(module, "_diffusers_hook", None)
        found += [f"{where}: hook {h}" for h in getattr(registry, "hooks", None) or {} if "dit_sparse" in h]
        processor = getattr(module, "processor", None)
        if processor is None:
            continue
        if type(processor).__module__.startswith("dit_sparse"):
            found.append(f"{where}: processor {type(processor).__name__}")
        if "dit_sparse" in str(getattr(processor, "_attention_backend", "")):
            found.append(f"{where}: attention backend {processor._attention_backend}")
    return found


def _apply(pipe, method: str) -> None:
    from ..config import SparseAttentionConfig
    from ..integration.apply import apply_sparse_attention, remove_sparse_attention

    if method == "dense":
        remove_sparse_attention(pipe)
    else:
        apply_sparse_attention(pipe, SparseAttentionConfig(**METHODS[method]))


def reference_outputs(settings: Sequence[RunSetting], path: str) -> None:
    """In this (fresh) process: each setting on a freshly loaded pipeline; saved to ``path`` (npz)."""
    from ..embedded import load_pipeline

    arrays = {}
    for index, setting in enumerate(settings):
        pipe = load_pipeline()
        pipe.set_progress_bar_config(disable=True)
        _apply(pipe, setting.method)
        arrays[str(index)] = generate(pipe, setting)
    np.savez(path, **arrays)


def run(rounds: int, *, check_fresh: bool = True, progress: bool = True) -> dict[str, Any]:
    """The long run in this process; returns the report (raises AssertionError on a stale or leftover result)."""
    from tqdm.auto import tqdm

    from ..embedded import load_pipeline

    runs = schedule(rounds)
    distinct = sorted(set(runs), key=runs.index)
    expected: dict[RunSetting, np.ndarray] = {}
    if check_fresh:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "reference.npz")
            settings_json = json.dumps([asdict(s) for s in distinct])
            code = (
                "import json, sys\n"
                "from dit_sparse.bench.long_run import RunSetting, reference_outputs\n"
                "reference_outputs([RunSetting(**s) for s in json.loads(sys.argv[1])], sys.argv[2])\n"
            )
            subprocess.run([sys.executable, "-c", code, settings_json, path], check=True)
            with np.load(path) as saved:
                expected = {s: saved[str(i)] for i, s in enumerate(distinct)}
    pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    memory, tensors, mismatches, leftovers = [], [], [], []
    for index, setting in enumerate(tqdm(runs, desc="long run", disable=not progress)):
        _apply(pipe, setting.method)
        if setting.method == "dense":
            leftovers += [f"run {index + 1}: {item}" for item in leftover_hooks(pipe.transformer)]
        frames = generate(pipe, setting)
        if check_fresh and not np.array_equal(frames, expected[setting]):
            diff = float(np.abs(frames.astype(np.float64) - expected[setting]).max())
            mismatches.append(f"run {index + 1} {setting}: differs from a fresh process by up to {diff:.3g}")
        memory.append(resident_bytes())
        tensors.append(live_tensors())
    # Memory follows the setting (a larger video needs more), so compare peaks: the first cycle through every
    # setting against the rounds after it.
    cycle = min(len(SIZES) * len(FRAMES) * len(GUIDANCE), len(memory))
    first_peak, later_peak = max(memory[:cycle]), max(memory[cycle:], default=max(memory[:cycle]))
    mib = 2**20
    report = {
        "rounds": rounds,
        "settings": len(distinct),
        "resident_mib": {str(r): round(memory[r - 1] / mib, 1) for r in sorted({1, min(10, rounds), rounds})},
        "peak_first_cycle_mib": round(first_peak / mib, 1),
        "peak_after_first_cycle_mib": round(later_peak / mib, 1),
        "growth_after_first_cycle_mib": round((later_peak - first_peak) / mib, 1),
        "resident_mib_per_round": [round(m / mib, 1) for m in memory],
        "live_tensors_per_round": tensors,
        # once every method has cached every layout, one period of the schedule must leave exactly what the
        # period before it left (needs three periods: the first fills the caches)
        "live_tensors_repeat_across_periods": (
            tensors[-PERIOD:] == tensors[-2 * PERIOD : -PERIOD] if rounds >= 3 * PERIOD else None
        ),
        "compared_with_fresh_process": check_fresh,
        "mismatches": mismatches,
        "leftover_hooks": leftovers,
    }
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--no-fresh-check", action="store_true", help="skip the fresh-process comparison")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    from .attention import environment_info

    report = {
        "environment": environment_info(torch.device("cpu")),
        **run(args.rounds, check_fresh=not args.no_fresh_check),
    }
    text = json.dumps(report, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    per_round = ("resident_mib_per_round", "live_tensors_per_round")
    print(json.dumps({k: v for k, v in report.items() if k not in per_round}, indent=1))
    ok = not report["mismatches"] and not report["leftover_hooks"]
    return 0 if ok and report["live_tensors_repeat_across_periods"] is not False else 1
