from __future__ import annotations

import json
import math
import sys
import types

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image

from dit_sparse.cli.main import main
from dit_sparse.evaluation import (
    compare_videos,
    load_video,
    lpips_unavailable_reason,
    plot_per_frame_psnr,
    temporal_flickering,
)

T, H, W = 8, 32, 48


def _frames(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth moving gradient (compresses well) and a noisy copy of it."""
    y, x = np.mgrid[0:H, 0:W]
    reference = np.stack(
        [np.stack([(x * 5 + t * 7) % 256, (y * 7 + t * 3) % 256, (x + y + t * 11) % 256], -1) for t in range(T)]
    ).astype(np.uint8)
    noise = np.random.default_rng(seed).normal(0, 12, reference.shape)
    candidate = np.clip(reference + noise, 0, 255).astype(np.uint8)
    return reference, candidate


def _write_mp4(path, frames: np.ndarray) -> str:
    imageio.mimwrite(path, list(frames), fps=8, macro_block_size=1)
    return str(path)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("videos")
    reference, candidate = _frames()
    return _write_mp4(folder / "ref.mp4", reference), _write_mp4(folder / "cand.mp4", candidate)


@pytest.fixture
def no_lpips_weights(tmp_path, monkeypatch):
    """An empty torch hub cache, so LPIPS is unavailable whether or not torchvision is installed."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def _psnr_numpy(reference: np.ndarray, candidate: np.ndarray) -> list[float]:
    diff = reference.astype(np.float64) - candidate.astype(np.float64)
    mse = (diff**2).reshape(len(diff), -1).mean(axis=1)
    return [10 * math.log10(255**2 / m) if m > 0 else math.inf for m in mse]


def test_load_video_reads_mp4_as_uint8_frames(videos):
    frames = load_video(videos[0])
    assert frames.shape == (T, H, W, 3) and frames.dtype == np.uint8
    # mp4 is lossy, but a smooth gradient comes back close to what was written
    assert np.abs(frames.astype(int) - _frames()[0].astype(int)).mean() < 8


def test_psnr_matches_numpy_on_frames_as_read_back(videos):
    metrics = compare_videos(*videos, lpips=False)
    expected = _psnr_numpy(load_video(videos[0]), load_video(videos[1]))
    np.testing.assert_allclose(metrics["per_frame_psnr"], expected, rtol=1e-12)
    assert metrics["psnr"] == pytest.approx(np.mean(expected), rel=1e-12)
    assert 10 < metrics["psnr"] < 40
    assert 0 < metrics["ssim"] < 1 and all(0 < v <= 1 for v in metrics["per_frame_ssim"])
    assert (metrics["frames"], metrics["height"], metrics["width"]) == (T, H, W)
    assert len(metrics["per_frame_psnr"]) == len(metrics["per_frame_ssim"]) == T
    assert metrics["identical_frames"] == 0


def test_identical_videos_give_ssim_one_and_infinite_psnr(videos):
    metrics = compare_videos(videos[0], videos[0], lpips=False)
    assert metrics["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert math.isinf(metrics["psnr"]) and all(math.isinf(v) for v in metrics["per_frame_psnr"])
    assert metrics["identical_frames"] == T


def test_arrays_tensors_and_files_give_the_same_metrics(videos):
    reference, candidate = load_video(videos[0]), load_video(videos[1])
    from_files = compare_videos(*videos, lpips=False)
    from_arrays = compare_videos(reference, candidate, lpips=False)
    from_floats = compare_videos(torch.from_numpy(reference) / 255.0, candidate.astype(np.float32) / 255, lpips=False)
    for other in (from_arrays, from_floats):
        assert other["per_frame_psnr"] == from_files["per_frame_psnr"]
        assert other["ssim"] == pytest.approx(from_files["ssim"], abs=1e-7)
        assert other["temporal_flickering"] == from_files["temporal_flickering"]


def test_float_frames_are_rounded_to_uint8():
    frames = np.array([0.0, 0.5, 1.0, 0.1]).reshape(1, 1, 4, 1).repeat(3, axis=-1)
    assert load_video(frames)[0, 0, :, 0].tolist() == [0, 128, 255, 26]


def test_temporal_flickering_matches_hand_computation():
    video = np.zeros((3, 2, 2, 3), np.uint8)
    video[1] = 10  # |f1 - f0| = 10 everywhere
    video[2, 0] = 40  # |f2 - f1|: 30 on the first row, 10 on the second -> mean 20
    expected = (255 - (10 + 20) / 2) / 255  # 0.94117...
    assert temporal_flickering(video) == pytest.approx(expected, abs=1e-12)
    assert temporal_flickering(video[:1]) is None
    assert temporal_flickering(np.zeros((4, 2, 2, 3), np.uint8)) == 1.0  # a static video does not flicker
    larger = np.tile(video, (1, 4, 4, 1))  # (3, 8, 8, 3): same differences, large enough for SSIM
    metrics = compare_videos(larger, np.zeros_like(larger), lpips=False)
    assert metrics["temporal_flickering"] == {"reference": pytest.approx(expected), "candidate": 1.0}


def test_lpips_is_reported_unavailable_with_a_reason(videos, no_lpips_weights):
    reason = lpips_unavailable_reason()
    assert reason
    metrics = compare_videos(*videos)
    assert "lpips" in metrics and metrics["lpips"] is None
    assert metrics["lpips_unavailable"] == reason
    assert compare_videos(*videos, lpips=False)["lpips_unavailable"] == "disabled (lpips=False)"


def test_lpips_detection_looks_for_cached_backbone_weights(tmp_path, monkeypatch):
    url = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    fake = types.ModuleType("torchvision")
    fake.models = types.SimpleNamespace(AlexNet_Weights=types.SimpleNamespace(DEFAULT=types.SimpleNamespace(url=url)))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reason = lpips_unavailable_reason()
    assert "alexnet-owt-7be5be79.pth" in reason and "torch hub cache" in reason
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)  # torch.hub.get_dir() is $TORCH_HOME/hub
    (tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth").write_bytes(b"")
    assert lpips_unavailable_reason() is None


def test_bad_inputs_raise_value_errors(tmp_path, videos):
    with pytest.raises(ValueError, match=r"video file not found: .*missing\.mp4"):
        load_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="is a folder, expected a video file"):
        load_video(tmp_path)
    corrupt = tmp_path / "x.mp4"
    corrupt.write_bytes(b"this is not a video" * 20)
    with pytest.raises(ValueError, match=r"could not read video .*x\.mp4: "):
        load_video(corrupt)
    with pytest.raises(ValueError, match=r"array has shape \(8, 32, 48\), expected \(T, H, W, 3\)"):
        load_video(np.zeros((8, 32, 48), np.uint8))
    with pytest.raises(ValueError, match=r"tensor has shape \(2, 3, 32, 48\), expected \(T, H, W, 3\)"):
        load_video(torch.zeros(2, 3, 32, 48))
    with pytest.raises(ValueError, match=r"array has float values in \[-0.5, 2\], expected \[0, 1\]"):
        load_video(np.linspace(-0.5, 2.0, 12).reshape(1, 2, 2, 3))
    with pytest.raises(ValueError, match="dtype int64, expected uint8"):
        load_video(np.zeros((1, 2, 2, 3), np.int64))
    with pytest.raises(ValueError, match="must be a file path, a numpy array or a torch tensor, got list"):
        load_video([[0]])
    fewer_frames = load_video(videos[0])[:5]
    with pytest.raises(ValueError, match=r"reference has shape \(8, 32, 48, 3\) and candidate \(5, 32, 48, 3\)"):
        compare_videos(videos[0], fewer_frames)
    with pytest.raises(ValueError, match=r"\(8, 32, 48, 3\) and candidate \(8, 16, 48, 3\)"):
        compare_videos(videos[0], load_video(videos[0])[:, :16])
    with pytest.raises(ValueError, match=r"frames of 4x48 \(HxW\) are too small for SSIM.*>= 6"):
        compare_videos(np.zeros((2, 4, 48, 3), np.uint8), np.zeros((2, 4, 48, 3), np.uint8))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        plot_per_frame_psnr([], tmp_path / "p.png")
    with pytest.raises(ValueError, match="NaN"):
        plot_per_frame_psnr([30.0, math.nan], tmp_path / "p.png")


def test_plot_draws_finite_and_infinite_values(tmp_path):
    image = plot_per_frame_psnr([30.0, 32.5, math.inf, 31.0], tmp_path / "psnr.png", title="t")
    with Image.open(tmp_path / "psnr.png") as saved:
        assert saved.format == "PNG" and saved.size == image.size
    pixels = np.asarray(image)
    assert ((pixels == (32, 96, 200)).all(-1)).sum() > 50  # the polyline
    assert ((pixels == (200, 60, 40)).all(-1)).sum() > 5  # the marker of the identical frame
    plot_per_frame_psnr([math.inf, math.inf], tmp_path / "all_inf.png")
    plot_per_frame_psnr([30.0], tmp_path / "one.png")


def test_cli_writes_json_and_plot(videos, tmp_path, capsys, no_lpips_weights):
    out, plot = tmp_path / "out.json", tmp_path / "psnr.png"
    assert main(["evaluate", *videos, "--json", str(out), "--plot", str(plot)]) == 0
    stdout = capsys.readouterr().out
    assert "| video | frames |" in stdout and "| cand.mp4 | 8 | 48x32 |" in stdout
    assert "LPIPS n/a:" in stdout
    report = json.loads(out.read_text())
    expected = compare_videos(*videos)
    assert {"psnr", "ssim", "lpips", "lpips_unavailable", "temporal_flickering", "per_frame_psnr"} <= set(report)
    assert (report["frames"], report["height"], report["width"]) == (T, H, W)
    assert report["psnr"] == pytest.approx(expected["psnr"])
    assert report["lpips"] is None and report["lpips_unavailable"]
    with Image.open(plot) as image:
        assert image.format == "PNG"


def test_cli_identical_videos_write_strict_json(videos, tmp_path):
    out = tmp_path / "same.json"
    assert main(["evaluate", videos[0], videos[0], "--json", str(out), "--no-lpips"]) == 0
    report = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(f"non-standard JSON {name}"))
    assert report["psnr"] == "inf" and report["per_frame_psnr"] == ["inf"] * T


def test_cli_folder_mode_pairs_files_by_name(tmp_path, capsys):
    reference_dir, candidate_dir = tmp_path / "dense", tmp_path / "sparse"
    reference_dir.mkdir()
    candidate_dir.mkdir()
    reference, candidate = _frames()
    _write_mp4(reference_dir / "a.mp4", reference)
    _write_mp4(candidate_dir / "a.mp4", candidate)
    _write_mp4(reference_dir / "b.mp4", reference[:4])
    _write_mp4(candidate_dir / "b.mp4", reference[:4])
    (reference_dir / "notes.txt").write_text("not a video")
    out = tmp_path / "out.json"
    plot = tmp_path / "psnr.png"
    assert main(["evaluate", str(reference_dir), str(candidate_dir), "--json", str(out), "--plot", str(plot)]) == 0
    stdout = capsys.readouterr().out
    assert "| a.mp4 |" in stdout and "| b.mp4 |" in stdout and "**mean of 2**" in stdout
    report = json.loads(out.read_text())
    assert sorted(report["pairs"]) == ["a.mp4", "b.mp4"]
    assert report["pairs"]["b.mp4"]["frames"] == 4 and report["pairs"]["b.mp4"]["psnr"] == "inf"
    a = compare_videos(reference_dir / "a.mp4", candidate_dir / "a.mp4", lpips=False)
    assert report["pairs"]["a.mp4"]["psnr"] == pytest.approx(a["psnr"])
    assert report["mean"]["psnr"] == "inf"  # b is identical
    assert report["mean"]["ssim"] == pytest.approx((a["ssim"] + report["pairs"]["b.mp4"]["ssim"]) / 2)
    assert (tmp_path / "psnr-a_mp4.png").is_file() and (tmp_path / "psnr-b_mp4.png").is_file()

    _write_mp4(candidate_dir / "c.mp4", reference[:2])
    assert main(["evaluate", str(reference_dir), str(candidate_dir)]) == 2
    err = capsys.readouterr().err
    assert "c.mp4 has no same-named video in REF folder" in err


def test_cli_missing_file_is_a_one_line_error(videos, tmp_path, capsys):
    missing = str(tmp_path / "nope.mp4")
    assert main(["evaluate", videos[0], missing]) == 2
    err = capsys.readouterr().err
    assert err == f"dit-sparse evaluate: error: CAND not found: {missing}\n"
    assert "Traceback" not in err


def test_cli_file_and_folder_mix_is_an_error(videos, tmp_path, capsys):
    assert main(["evaluate", videos[0], str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "expected two files or two folders" in err and "\n" not in err
