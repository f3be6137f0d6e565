"""The shipped embedded model: it loads offline with stock diffusers, fits the size budget, and generates."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
from diffusers import WanPipeline

import dit_sparse as ds
from dit_sparse import embedded
from dit_sparse.cli.main import main
from dit_sparse.integration.capture import capture_attention_inputs


@pytest.fixture(scope="module")
def pipe():
    return embedded.load_pipeline()


def test_generation_defaults_are_exactly_the_native_call_arguments():
    assert set(embedded.GENERATION_DEFAULTS) == {"height", "width", "num_frames", "num_inference_steps",
                                                 "guidance_scale"}  # fmt: skip


def test_loads_offline_with_stock_diffusers_and_fits_the_budget(pipe):
    folder = embedded.model_path()
    assert isinstance(WanPipeline.from_pretrained(str(folder), local_files_only=True), WanPipeline)
    assert isinstance(pipe, WanPipeline)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size <= 40 * 2**20, f"{size / 2**20:.1f} MB"
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pkl"))  # safetensors only


def test_default_generation_has_at_least_2048_video_tokens(pipe):
    kwargs = {**embedded.GENERATION_DEFAULTS, "num_inference_steps": 1, "output_type": "latent"}
    with capture_attention_inputs(pipe, layers=[0], steps=[0]) as calls:
        pipe("a red circle moving right", **kwargs)
    layout = calls[0].layout
    assert (layout.frames, layout.height, layout.width) == (9, 16, 16)
    assert calls[0].q.shape[-2] == layout.num_tokens == 2304


def test_cli_generate_uses_the_embedded_model_by_default(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["generate", "--steps", "2", "--backend", "reference", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "embedded"
    demo = embedded.DEMO_SPARSE_ATTENTION  # with no --method: the demo's method and settings
    assert report["config"]["method"] == demo["method"] and report["config"]["block_size"] == demo["block_size"]
    assert report["config"]["dense_steps"] == demo["dense_steps"]
    settings = report["settings"]
    d = embedded.DEMO_DEFAULTS
    assert {k: v for k, v in d.items() if k != "num_frames"} == {
        k: v for k, v in embedded.GENERATION_DEFAULTS.items() if k != "num_frames"
    }
    assert (settings["height"], settings["width"], settings["frames"]) == (d["height"], d["width"], d["num_frames"])
    assert settings["guidance"] == d["guidance_scale"] and settings["steps"] == 2
    assert (out / "sparse.mp4").stat().st_size > 0
    video = ds.evaluation.load_video(str(out / "sparse.mp4"))
    assert np.asarray(video).shape[:3] == (d["num_frames"], d["height"], d["width"])


def test_missing_model_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    def missing():
        raise FileNotFoundError("the embedded model 'wan-tiny-t2v' is not installed")

    monkeypatch.setattr(embedded, "model_path", missing)
    assert main(["generate", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "embedded model 'wan-tiny-t2v' is not installed" in err and len(err.strip().splitlines()) == 1


def test_adherence_script_measures_a_given_folder_at_a_given_guidance(tmp_path, monkeypatch):
    from dit_sparse.embedded import adherence

    small = {"height": 32, "width": 32, "num_frames": 5, "num_inference_steps": 2}
    for key, value in small.items():
        monkeypatch.setitem(embedded.GENERATION_DEFAULTS, key, value)
    out = tmp_path / "adherence.json"
    sheet = tmp_path / "sheet.png"
    argv = ["--model", str(embedded.model_path()), "--count", "2", "--guidance-scale", "2", "--out", str(out)]
    assert adherence.main([*argv, "--sheet", str(sheet), "--no-progress"]) == 0
    assert iio.imread(sheet).shape == (2 * 32, 5 * 32, 3)  # a row of 5 frames per sample
    result = json.loads(out.read_text())
    assert result["generation"] == {**small, "guidance_scale": 2.0}
    assert result["model"] == str(embedded.model_path()) and result["count"] == 2
    assert [s["expected_color"] for s in result["samples"]] == ["red", "red"]
    assert 0.0 <= result["color_accuracy"] <= 1.0 and 0.0 <= result["direction_accuracy"] <= 1.0


def test_word_sensitivity_is_zero_without_cross_attention_and_not_with_it(tmp_path):
    from dit_sparse.embedded.adherence import sensitivity_main, word_sensitivity

    out = tmp_path / "sensitivity.json"
    assert sensitivity_main(["--model", str(embedded.model_path()), "--out", str(out)]) == 0
    result = json.loads(out.read_text())["relative_l2"]
    assert set(result) == {"text_encoder", "sigma=0.9", "sigma=0.6", "sigma=0.3"}
    assert set(result["sigma=0.9"]) == {"empty", "direction", "colour", "shape", "background"}
    assert result["sigma=0.9"]["colour"] > 0.01  # the shipped model reads the colour word
    assert all(value > 0.01 for value in result["text_encoder"].values())  # every swap changes the embedding

    deaf = embedded.load_pipeline()
    for block in deaf.transformer.blocks:  # no path from the text to the video tokens
        block.attn2.to_out[0].weight.data.zero_()
        block.attn2.to_out[0].bias.data.zero_()
    small = word_sensitivity(deaf, sigmas=(0.5,), latent_shape=(8, 3, 8, 8))
    assert small["sigma=0.5"] == dict.fromkeys(small["sigma=0.5"], 0.0)
    assert small["text_encoder"] == result["text_encoder"]  # the text encoder was left as it was


def test_direction_steering_runs_video_to_video_and_a_deaf_model_ignores_the_swap():
    from dit_sparse.embedded.adherence import direction_steering

    deaf = embedded.load_pipeline()
    for block in deaf.transformer.blocks:  # no path from the text to the video tokens
        block.attn2.to_out[0].weight.data.zero_()
        block.attn2.to_out[0].bias.data.zero_()
    small = {"height": 32, "width": 32, "num_frames": 5, "num_inference_steps": 2, "guidance_scale": 5.0}
    result = direction_steering(deaf, strengths=(0.5, 1.0), count=4, call_kwargs=small, progress=False)
    rows = result["rows"]
    assert set(rows) == {"strength=0.5", "strength=1.0"} and result["count"] == 4
    assert rows["strength=1.0"]["start_sigma"] > rows["strength=0.5"]["start_sigma"] > 0.0
    for row in rows.values():  # the swapped word cannot change what a deaf model draws
        assert row["swapped_follows_clip"] == row["follows_clip"]
        assert all(0.0 <= row[k] <= 1.0 for k in ("follows_clip", "swapped_follows_word", "swapped_follows_clip"))
    with pytest.raises(ValueError, match="strengths"):
        direction_steering(deaf, strengths=(0.0,), count=1, call_kwargs=small)
