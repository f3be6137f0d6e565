"""The quantization-error measurement: ordering of the precisions, K offsets, permutations and the CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

import dit_sparse as ds
from dit_sparse.bench.quant import call_permutation, main, quantization_error, quantization_error_table
from dit_sparse.layout import ORDERS
from dit_sparse.methods.paro import OrderStatistics, choose_orders


def inputs(N=256, H=2, D=16):
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(1, H, N, D, generator=g) * 2 for _ in range(3))


def test_precisions_order_by_error_and_the_mask_keeps_a_quarter():
    q, k, v = inputs()
    rows = quantization_error(q, k, v, density=0.25, block_size=32)
    assert [row["precision"] for row in rows] == ["fp32", "fp16", "int8", "int4"]
    assert all(row["density"] == pytest.approx(0.25) for row in rows)
    masked = [row["rel_l2_vs_masked"] for row in rows]
    assert masked[0] < 1e-5 and masked == sorted(masked) and masked[3] < 0.5
    # against dense attention the sparsity error comes on top
    assert all(row["rel_l2_vs_dense"] > row["rel_l2_vs_masked"] for row in rows)


def test_k_offset_leaves_quantized_error_alone_and_permutations_apply():
    q, k, v = inputs()
    plain = {r["precision"]: r for r in quantization_error(q, k, v, block_size=32, precisions=["int8", "int4"])}
    shifted = quantization_error(q, k, v, block_size=32, precisions=["int8", "int4"], k_offset=20.0)
    for row in shifted:
        assert row["rel_l2_vs_masked"] == pytest.approx(plain[row["precision"]]["rel_l2_vs_masked"], rel=0.1)
    identity = quantization_error(q, k, v, block_size=32, permutation=torch.arange(256), precisions=["int8"])
    assert identity[0]["rel_l2_vs_masked"] == plain["int8"]["rel_l2_vs_masked"]
    per_head = torch.stack([torch.randperm(256, generator=torch.Generator().manual_seed(h)) for h in range(2)])
    (reordered,) = quantization_error(q, k, v, block_size=32, permutation=per_head, precisions=["int8"])
    assert reordered["rel_l2_vs_masked"] != plain["int8"]["rel_l2_vs_masked"] and reordered["rel_l2_vs_masked"] < 0.05
    with pytest.raises(ValueError, match=r"unknown precision\(s\) \['int2'\]"):
        quantization_error(q, k, v, precisions=["int2"])


def test_table_averages_over_calls():
    calls = [SimpleNamespace(q=q, k=k, v=v) for q, k, v in (inputs(128), inputs(128, D=32))]
    rows = quantization_error_table(calls, k_offsets=(0.0, 5.0), block_size=32, precisions=["fp32", "int8"])
    assert [(row["precision"], row["k_offset"], row["calls"]) for row in rows] == [
        ("fp32", 0.0, 2),
        ("int8", 0.0, 2),
        ("fp32", 5.0, 2),
        ("int8", 5.0, 2),
    ]
    first = [quantization_error(c.q, c.k, c.v, block_size=32, precisions=["int8"])[0] for c in calls]
    assert rows[1]["rel_l2_vs_masked"] == pytest.approx(sum(r["rel_l2_vs_masked"] for r in first) / 2)


def test_main_prints_and_writes_rows(tmp_path, capsys):
    out = tmp_path / "rows.json"
    argv = ["--frames", "3", "--height", "4", "--width", "8", "--block-size", "16", "--k-offsets", "0"]
    assert main([*argv, "--order", "HWF", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "order HWF" in printed and "int4" in printed
    assert [row["precision"] for row in json.loads(out.read_text())["rows"]] == ["fp32", "fp16", "int8", "int4"]
    with pytest.raises(SystemExit):
        main([*argv, "--density", "0"])
    assert "--density must be in (0, 1]" in capsys.readouterr().err


def test_paro_order_is_each_heads_selected_order():
    layout = ds.VideoLayout(4, 4, 8)
    q, k, v = inputs(layout.num_tokens)
    call = SimpleNamespace(q=q, k=k, v=v, layout=layout)
    stats = OrderStatistics(layout, 32)
    stats.update(q, k)
    expected = [h.order for h in choose_orders(stats, density=0.25)]
    perm = call_permutation(call, "paro", 0.25, 32)
    assert [next(o for o in ORDERS if torch.equal(layout.permutation(o), row)) for row in perm] == expected
    assert call_permutation(call, None, 0.25, 32) is None and call_permutation(call, "FHW", 0.25, 32) is None
    rows = quantization_error_table([call], order="paro", block_size=32, precisions=["int8"])
    (direct,) = quantization_error(q, k, v, block_size=32, permutation=perm, precisions=["int8"])
    assert rows[0]["order"] == "paro" and rows[0]["rel_l2_vs_dense"] == pytest.approx(direct["rel_l2_vs_dense"])
