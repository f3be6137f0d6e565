"""`dit-sparse calibrate` end to end on a tiny Wan pipeline saved to a local folder, then `generate` with the plan."""

from __future__ import annotations

import json

import pytest
from tiny_models import tiny_wan_pipeline

from dit_sparse.calibration import SparsityPlan
from dit_sparse.cli.main import main

SIZE = ["--frames", "9", "--height", "144", "--width", "112", "--guidance", "3"]


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-wan")
    tiny_wan_pipeline().save_pretrained(folder)
    return str(folder)


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# calibration prompts\na red circle\n\na blue square moving left\n")
    return str(path)


def test_calibrate_writes_plan_picture_and_table_then_generate_runs_it(wan_folder, prompts, tmp_path, capsys):
    out = tmp_path / "plans" / "wan.json"
    code = main(["calibrate", "--model", wan_folder, "--prompts", prompts, "--out", str(out), "--max-rel-l2", "0.3",
                 "--steps", "2", "--step-buckets", "2", "--block-size", "16", "--no-progress", *SIZE])  # fmt: skip
    assert code == 0
    plan = SparsityPlan.load(out)
    assert plan.provenance.num_prompts == 2 and plan.provenance.search.max_rel_l2 == 0.3
    assert all(h.rel_l2 <= 0.3 for b in plan.buckets for heads in b.layers for h in heads)
    assert (tmp_path / "plans" / "wan.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "| steps | layer | patterns |" in printed and f"wrote {out}" in printed
    # a config file naming the plan, accepted wherever a config path is (here: generate --plan)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"method": "sparse_vdit", "plan": str(out), "block_size": 16, "backend": "reference"}))
    run_dir = tmp_path / "run"
    code = main(
        ["generate", "--model", wan_folder, "--plan", str(config), "--steps", "2", *SIZE, "--out", str(run_dir)]
    )
    assert code == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert report["method"] == "sparse_vdit" and report["config"]["plan"] == str(out)
    assert 0 < report["summary"]["mean_density"] <= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompts", "/no/such/prompts.txt", "--target-recall", "0.9"], "no such prompts file: /no/such/prompts.txt"),
        (["--target-recall", "0.9", "--step-buckets", "0,x"], "--step-buckets takes a number or comma-separated"),
        (["--target-recall", "1.5"], "target_recall must be in (0, 1], got 1.5"),
    ],
)
def test_bad_inputs_give_one_line_errors(args, message, prompts, wan_folder, tmp_path, capsys):
    if "--prompts" not in args:
        args = ["--prompts", prompts, *args]
    code = main(["calibrate", "--model", wan_folder, *args, "--steps", "2", *SIZE, "--no-progress",
                 "--out", str(tmp_path / "p.json")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_empty_prompts_file_and_missing_target(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n")
    assert (
        main(["calibrate", "--prompts", str(empty), "--target-recall", "0.9", "--out", str(tmp_path / "p.json")]) == 2
    )
    assert "holds no prompts" in capsys.readouterr().err
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    assert main(["calibrate", "--prompts", str(prompts), "--out", str(tmp_path / "p.json")]) == 2
    assert "give exactly one target" in capsys.readouterr().err
    assert main(["calibrate", "--prompts", str(prompts), "--method", "paro", "--target-recall", "0.9",
                 "--out", str(tmp_path / "p.json")]) == 2  # fmt: skip
    assert "--target-recall/--max-rel-l2 do not apply" in capsys.readouterr().err
    assert main(["calibrate", "--prompts", str(prompts), "--levels", "--target-recall", "0.9",
                 "--out", str(tmp_path / "p.json")]) == 2  # fmt: skip
    assert "--levels needs --max-rel-l2" in capsys.readouterr().err
    assert main(["calibrate", "--prompts", str(prompts), "--method", "paro", "--levels",
                 "--out", str(tmp_path / "p.json")]) == 2  # fmt: skip
    assert "--method paro has none" in capsys.readouterr().err


def test_calibrate_paro_then_generate_the_plan_with_int8(wan_folder, prompts, tmp_path, capsys):
    out = tmp_path / "paro.json"
    code = main(["calibrate", "--model", wan_folder, "--prompts", prompts, "--out", str(out), "--method", "paro",
                 "--density", "0.3", "--steps", "2", "--block-size", "16", "--no-progress", *SIZE])  # fmt: skip
    assert code == 0
    plan = SparsityPlan.load(out)
    assert plan.provenance.search.method == "paro" and plan.provenance.search.density == 0.3
    assert "mask" in capsys.readouterr().out
    run_dir = tmp_path / "run"
    code = main(["generate", "--model", wan_folder, "--plan", str(out), "--quant", "int8", "--steps", "2", *SIZE,
                 "--out", str(run_dir)])  # fmt: skip
    assert code == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert report["method"] == "paro" and report["config"]["quant"] == "int8"
    assert 0 < report["summary"]["mean_density"] < 0.5
