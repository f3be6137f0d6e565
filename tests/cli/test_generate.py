"""`dit-sparse generate` end to end on tiny pipelines saved to local folders (no hub)."""

from __future__ import annotations

import json
import math

import pytest
from tiny_models import tiny_flux_pipeline, tiny_wan_pipeline

from dit_sparse.cli.main import main

WAN_ARGS = ["--steps", "2", "--frames", "25", "--height", "144", "--width", "112", "--guidance", "3"]
SPARSE_ARGS = ["--method", "radial", "--block-size", "16", "--backend", "reference"]


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-wan")
    tiny_wan_pipeline().save_pretrained(folder)
    return str(folder)


def test_generate_with_compare_dense(wan_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["generate", "--model", wan_folder, "--prompt", "a red circle", *WAN_ARGS, *SPARSE_ARGS,
                 "--compare-dense", "--out", str(out)])  # fmt: skip
    assert code == 0
    for name in ("sparse.mp4", "dense.mp4", "side_by_side.mp4", "report.json"):
        assert (out / name).stat().st_size > 0
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "radial"
    speed = report["speed"]
    for key in ("speedup_total", "speedup_transformer", "speedup_attention", "mean_density", "attention_flops_saved"):
        assert speed[key] is not None and speed[key] > 0
    assert 0 < speed["mean_density"] < 1
    # steady-state times: first kernel calls (compilation) are reported apart, and the times stay positive
    assert speed["kernel_first_call_seconds"]["sparse"] >= 0 and speed["kernel_first_call_seconds"]["dense"] >= 0
    assert all(speed[run]["total_seconds"] > 0 for run in ("dense", "sparse"))
    assert speed["search_seconds"] >= 0 and speed["overhead_seconds"] >= 0 and speed["full_mask_calls"] == 0
    assert math.isfinite(report["quality"]["psnr"]) and 0 < report["quality"]["ssim"] <= 1
    printed = capsys.readouterr().out
    assert "| self-attention (s) |" in printed and "PSNR" in printed


def test_repeats_alternate_dense_and_sparse_and_report_the_medians(wan_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["generate", "--model", wan_folder, *WAN_ARGS, *SPARSE_ARGS, "--compare-dense", "--repeats", "3",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    runs = report["runs"]
    assert len(runs["dense"]) == len(runs["sparse"]) == 3
    speed = report["speed"]
    assert speed["repeats"] == 3
    for kind in ("dense", "sparse"):
        for key in ("total_seconds", "transformer_seconds", "attention_seconds"):
            times = sorted(run[key] for run in runs[kind])
            assert speed[kind][key] == times[1]  # the median of three
    assert speed["speedup_transformer"] == pytest.approx(
        speed["dense"]["transformer_seconds"] / speed["sparse"]["transformer_seconds"]
    )
    assert all(run["method"] == "dense" for run in runs["dense"]) and runs["sparse"][0]["method"] == "radial"
    assert "medians of 3 runs each, dense and sparse alternately" in capsys.readouterr().out


def test_image_model_writes_a_png(tmp_path):
    folder = tmp_path / "tiny-flux"
    tiny_flux_pipeline().save_pretrained(folder)
    out = tmp_path / "img"
    args = ["generate", "--model", str(folder), "--steps", "2", "--height", "36", "--width", "44", *SPARSE_ARGS]
    assert main([*args, "--out", str(out)]) == 0
    assert (out / "sparse.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/no/such/folder"], "no such folder: '/no/such/folder'"),
        (["--model", "./also/missing"], "no such folder: './also/missing'"),
        (["--model", "pyproject.toml"], "'pyproject.toml' is a file; give a diffusers pipeline folder"),
        (["--model", "tests"], "'tests' is a folder without model_index.json"),
        (["--param", "windw=3"], "unknown parameter(s) ['windw'] for method 'sparsed'"),  # the embedded demo's
        (["--method", "radial", "--param", "windw=3"], "unknown parameter(s) ['windw'] for method 'radial'"),
    ],
)
def test_bad_inputs_give_one_line_errors(args, message, tmp_path, capsys):
    assert main(["generate", *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "--steps: must be a positive integer, got 0"),
        (["--frames", "-3"], "--frames: must be a positive integer, got -3"),
        (["--height", "1.5"], "--height: must be an integer, got '1.5'"),
        (["--dense-steps", "-1"], "--dense-steps: must be an integer >= 0, got -1"),
        (["--block-size", "0"], "--block-size: must be a positive integer, got 0"),
        (["--repeats", "0"], "--repeats: must be a positive integer, got 0"),
    ],
)
def test_bad_numbers_exit_2_before_loading(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", *args, "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_impossible_size_and_unknown_method(wan_folder, tmp_path, capsys):
    code = main(["generate", "--model", wan_folder, *WAN_ARGS[:4], "--height", "100", "--width", "112",
                 *SPARSE_ARGS, "--out", str(tmp_path / "x")])  # fmt: skip
    assert code == 2
    assert "divisible by 16" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse rejects it before anything loads
        main(["generate", "--method", "magic", "--out", str(tmp_path)])
    assert exit_info.value.code == 2


def test_sweep_writes_the_frontier(wan_folder, tmp_path, capsys):
    out = tmp_path / "sweep"
    points = ["--point", "draft:fraction=0.3,window=[2,8]", "--point", "radial:decay_factor=0.5,dense_steps=1",
              "--point", "radial:decay_factor=0.5"]  # fmt: skip
    code = main(["sweep", "--model", wan_folder, *WAN_ARGS, "--block-size", "16", "--backend", "reference",
                 *points, "--out", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads((out / "frontier.json").read_text())
    assert [row["method"] for row in report["points"]] == ["draft", "radial", "radial"]
    assert report["points"][0]["params"] == {"fraction": 0.3, "window": [2, 8]}
    for row in report["points"]:
        assert row["speedup"] > 0 and 0 < row["mean_density"] < 1 and math.isfinite(row["psnr"])
        assert row["transformer_speedup"] > 0 and row["attention_speedup"] > 0
    # speedups are against the dense times interpolated between the runs before and after the points
    before, after = report["dense"]["total_seconds"], report["dense_after"]["total_seconds"]
    for index, row in enumerate(report["points"]):
        weight = (index + 1) / (len(report["points"]) + 1)
        assert row["dense_total_seconds"] == pytest.approx((1 - weight) * before + weight * after)
        assert row["speedup"] == pytest.approx(row["dense_total_seconds"] / row["total_seconds"])
    assert report["dense_drift"] == pytest.approx(after / before)
    # a point's own dense_steps overrides the sweep's: its first step ran dense, so it is denser than the same
    # mask without it
    assert report["points"][1]["mean_density"] > report["points"][2]["mean_density"]
    assert (out / "frontier.png").stat().st_size > 0
    assert "| radial(decay_factor=0.5,dense_steps=1) |" in capsys.readouterr().out
    assert main(["sweep", "--point", "radial", "--out", str(out)]) == 2
    assert "--point takes METHOD:NAME=VALUE" in capsys.readouterr().err


def test_config_defaults_follow_the_model():
    from dit_sparse.cli.generate import _config
    from dit_sparse.cli.main import build_parser
    from dit_sparse.embedded import DEMO_SPARSE_ATTENTION

    def config(*argv):
        return _config(build_parser().parse_args(["generate", *argv, "--out", "x"]))

    demo = config()  # the embedded model: its demo setting
    assert demo.method == DEMO_SPARSE_ATTENTION["method"] and demo.block_size == DEMO_SPARSE_ATTENTION["block_size"]
    assert demo.dense_steps == DEMO_SPARSE_ATTENTION["dense_steps"]
    assert demo.method_params(0)["fraction"] == DEMO_SPARSE_ATTENTION["fraction"]
    assert config("--param", "fraction=0.3", "--dense-steps", "2").method_params(0)["fraction"] == 0.3
    assert config("--param", "fraction=0.3", "--dense-steps", "2").dense_steps == 2
    own = config("--model", "some/model")  # another model: radial, no dense steps, blocks of 128
    assert (own.method, own.dense_steps, own.block_size) == ("radial", 0, 128)
    assert config("--method", "adaspa").method_params(0)["density"] == 0.2  # the method's own defaults


def _ltx_video_folder(folder):
    from tiny_ltx_video import tiny_ltx_pipeline

    tiny_ltx_pipeline().save_pretrained(folder)
    return ["--frames", "33", "--height", "288", "--width", "224", "--pipeline-arg", "frame_rate=25"]


def _ltx2_folder(folder):
    from tiny_ltx2 import tiny_ltx2_pipeline

    tiny_ltx2_pipeline().save_pretrained(folder)
    # the tiny model has 2 blocks; the pipeline's spatio-temporal guidance defaults to block 28 of 48
    return ["--frames", "17", "--height", "288", "--width", "224", "--pipeline-arg",
            "spatio_temporal_guidance_blocks=[1]", "--pipeline-arg", "max_sequence_length=16"]  # fmt: skip


def _mochi_folder(folder):
    from tiny_models import tiny_mochi_pipeline

    tiny_mochi_pipeline().save_pretrained(folder)
    return ["--frames", "25", "--height", "144", "--width", "112"]


@pytest.mark.parametrize("family", ["ltx_video", "ltx2", "mochi"])
def test_generate_runs_a_new_family_from_a_local_folder(family, tmp_path):
    """`--model` takes any supported family's saved pipeline; `--pipeline-arg` passes what the CLI has no
    option for."""
    folder = tmp_path / family
    args = {"ltx_video": _ltx_video_folder, "ltx2": _ltx2_folder, "mochi": _mochi_folder}[family](folder)
    out = tmp_path / "run"
    code = main(["generate", "--model", str(folder), "--steps", "2", "--guidance", "3", *args, *SPARSE_ARGS,
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert (out / "sparse.mp4").stat().st_size > 0 and 0 < report["summary"]["mean_density"] < 1


def test_a_pipeline_arg_the_pipeline_does_not_take_is_refused(wan_folder, tmp_path, capsys):
    code = main(["generate", "--model", wan_folder, *WAN_ARGS, *SPARSE_ARGS, "--pipeline-arg", "frame_rate=25",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert code != 0
    assert "WanPipeline does not take frame_rate" in capsys.readouterr().err
