"""The long-run check at tiny size: many generations in one process, no stale mask, no leftover hook, flat memory."""

from __future__ import annotations

import itertools

import dit_sparse as ds
from dit_sparse.bench.long_run import METHODS, PERIOD, SIZES, leftover_hooks, run, schedule


def test_schedule_switches_every_setting_and_method():
    runs = schedule(24)
    assert {(r.height, r.width) for r in runs} == set(SIZES)
    assert {r.frames for r in runs} == {5, 9} and {r.guidance for r in runs} == {5.0, 1.0}
    assert {r.method for r in runs} == set(METHODS)
    assert all(a.method != b.method for a, b in itertools.pairwise(runs))  # apply/replace/remove each run
    assert schedule(3 * PERIOD)[PERIOD:] == schedule(2 * PERIOD) and len(set(schedule(PERIOD))) == PERIOD


def test_leftover_hooks_sees_an_applied_pipeline():
    pipe = ds.embedded.load_pipeline()
    ds.apply_sparse_attention(pipe, ds.SparseAttentionConfig("radial", block_size=16))
    assert any("hook dit_sparse" in item for item in leftover_hooks(pipe.transformer))
    ds.remove_sparse_attention(pipe)
    assert leftover_hooks(pipe.transformer) == []


def test_long_run_equals_fresh_processes_and_leaves_nothing():
    report = run(14, progress=False)  # the first cycle through the 12 settings, and two more runs
    assert report["mismatches"] == [] and report["leftover_hooks"] == []
    assert report["settings"] == len(set(schedule(14)))
    # live tensors stay bounded (the exact period-to-period check needs 144 runs: benchmarks/long_run.py)
    tensors = report["live_tensors_per_round"]
    assert max(tensors[12:]) <= max(tensors[:12]) + 64
