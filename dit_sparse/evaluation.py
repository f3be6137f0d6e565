"""Compare a video made with sparse attention against its dense reference: PSNR, SSIM, LPIPS, flickering.

Videos are ``(T, H, W, 3)`` uint8 RGB frames throughout (``load_video`` converts files, float arrays and
tensors to that). The metrics:

- **PSNR** per frame, ``10 * log10(255^2 / MSE)`` in dB over the frame's uint8 pixels, and its mean over
  frames. Identical frames have infinite PSNR (then the mean is infinite too; ``identical_frames`` counts them).
- **SSIM** per frame (torchmetrics' Gaussian-window SSIM on frames scaled to [0, 1], ``data_range=1.0``) and
  its mean.
- **LPIPS** (Zhang et al. 2018, https://arxiv.org/abs/1801.03924; AlexNet backbone, mean over frames) when it
  can run without downloading anything: it needs torchvision and the AlexNet ImageNet weights already in the
  torch hub cache. Otherwise it is reported as ``None`` with the reason, never left out.
- **Temporal flickering** of each video as VBench defines it (Huang et al. 2024, "VBench: Comprehensive
  Benchmark Suite for Video Generative Models", https://arxiv.org/abs/2311.17982): the mean absolute
  difference between consecutive frames, in 0..255 pixel units, mapped to ``(255 - mean_abs_diff) / 255``.
  1.0 is a perfectly static video; lower means more frame-to-frame change. It is a no-reference score of
  each video on its own, so comparing the candidate's with the reference's shows whether sparse attention
  added flicker. (VBench applies it to static-scene prompts only, where all change is flicker.)

Example:
    >>> import numpy as np
    >>> from dit_sparse.evaluation import compare_videos
    >>> reference = np.zeros((4, 16, 16, 3), np.uint8)
    >>> metrics = compare_videos(reference, reference + 2, lpips=False)
    >>> round(metrics["psnr"], 2), metrics["frames"]
    (42.11, 4)
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoLike",
    "compare_videos",
    "load_video",
    "lpips_unavailable_reason",
    "plot_per_frame_psnr",
    "temporal_flickering",
]

logger = logging.getLogger(__name__)

VideoLike = str | os.PathLike | np.ndarray | torch.Tensor

VIDEO_EXTENSIONS = (".mp4", ".gif")

# Frames per torchmetrics call: bounds the float copies SSIM and LPIPS make of long, large videos.
_CHUNK = 8
# torchmetrics' SSIM reflect-pads frames by half its 11-pixel Gaussian window, which needs sides > 5.
_SSIM_MIN_SIDE = 6


def load_video(video: VideoLike) -> np.ndarray:
    """Frames of ``video`` as a ``(T, H, W, 3)`` uint8 RGB array.

    Args:
        video (`str`, `os.PathLike`, `np.ndarray` or `torch.Tensor`): a video file (mp4 read with imageio's
            ffmpeg plugin, gif with Pillow), or frames ``(T, H, W, 3)`` as uint8 (0..255) or float in [0, 1]
            (converted with ``round(x * 255)``).

    Returns:
        A ``(T, H, W, 3)`` uint8 array (``T >= 1``).

    Raises:
        ValueError: the file is missing, a folder, or unreadable; the frames are not ``(T, H, W, 3)``; the dtype
            is neither uint8 nor float; float values lie outside [0, 1].
    """
    if isinstance(video, str | os.PathLike):
        return _read_video_file(os.fspath(video))
    if isinstance(video, torch.Tensor):
        tensor = video.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float64)  # numpy has no bfloat16
        return _frames_from_array(tensor.numpy(), "tensor")
    if isinstance(video, np.ndarray):
        return _frames_from_array(video, "array")
    raise ValueError(f"video must be a file path, a numpy array or a torch tensor, got {type(video).__name__}")


def _read_video_file(path: str) -> np.ndarray:
    import imageio.v3 as iio

    if not os.path.exists(path):
        raise ValueError(f"video file not found: {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, expected a video file")
    # mp4 (and anything else ffmpeg reads) through imageio-ffmpeg; gif through Pillow.
    plugin = "pillow" if path.lower().endswith(".gif") else "FFMPEG"
    try:
        frames = np.asarray(iio.imread(path, index=None, plugin=plugin))
    except Exception as error:  # imageio and ffmpeg raise OSError, RuntimeError, StopIteration, ...
        raise ValueError(f"could not read video {path}: {_error_summary(error)}") from error
    if frames.ndim == 3:  # (T, H, W) grayscale
        frames = np.repeat(frames[..., None], 3, axis=-1)
    elif frames.ndim == 4 and frames.shape[-1] == 4:  # RGBA gif: drop alpha
        frames = frames[..., :3]
    elif frames.ndim == 4 and frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    if frames.size == 0:
        raise ValueError(f"video {path} has no frames")
    logger.debug("read %s: %s %s", path, frames.shape, frames.dtype)
    return _frames_from_array(frames, f"video {path}")


def _error_summary(error: BaseException) -> str:
    """One line from a (possibly multi-line, ffmpeg-log-carrying) exception message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if len(lines) > 1 and lines[-1] != lines[0]:
        return f"{lines[0]} ({lines[-1]})"
    return lines[0]


def _frames_from_array(frames: np.ndarray, what: str) -> np.ndarray:
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(
            f"{what} has shape {tuple(frames.shape)}, expected (T, H, W, 3): T >= 1 RGB frames, channels last"
        )
    if frames.dtype == np.uint8:
        return np.ascontiguousarray(frames)
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"{what} has dtype {frames.dtype}, expected uint8 (0..255) or float in [0, 1]")
    if not np.isfinite(frames).all():
        raise ValueError(f"{what} has NaN or infinite values, expected float values in [0, 1]")
    low, high = float(frames.min()), float(frames.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{what} has float values in [{low:g}, {high:g}], expected [0, 1]")
    return np.round(frames.astype(np.float64) * 255.0).astype(np.uint8)


def temporal_flickering(video: VideoLike) -> float | None:
    """VBench's temporal-flickering score of one video (None for a single frame).

    ``(255 - mean_abs_diff) / 255``, where ``mean_abs_diff`` is the mean over consecutive frame pairs of the
    mean absolute pixel difference in 0..255 units (VBench: Huang et al. 2024, https://arxiv.org/abs/2311.17982).
    1.0 means no change between frames.

    Args:
        video (`str`, `os.PathLike`, `np.ndarray` or `torch.Tensor`): anything :func:`load_video` accepts.

    Returns:
        The score in [0, 1], or None when the video has fewer than two frames.
    """
    return _temporal_flickering(load_video(video))


def _temporal_flickering(frames: np.ndarray) -> float | None:
    if frames.shape[0] < 2:
        return None
    diffs = [  # one pair at a time: an int16 copy of a whole long video would be large
        np.abs(frames[t + 1].astype(np.int16) - frames[t].astype(np.int16)).mean() for t in range(len(frames) - 1)
    ]
    return float((255.0 - np.mean(diffs)) / 255.0)


def _per_frame_psnr(reference: np.ndarray, candidate: np.ndarray) -> list[float]:
    values = []
    for ref, cand in zip(reference, candidate, strict=True):
        mse = np.mean((ref.astype(np.float64) - cand.astype(np.float64)) ** 2)
        values.append(math.inf if mse == 0 else float(10.0 * np.log10(255.0**2 / mse)))
    return values


def _as_unit_batch(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).to(torch.float32) / 255.0  # (T, 3, H, W)


def _per_frame_ssim(reference: np.ndarray, candidate: np.ndarray) -> list[float]:
    from torchmetrics.functional.image.ssim import structural_similarity_index_measure

    height, width = reference.shape[1:3]
    if min(height, width) < _SSIM_MIN_SIDE:
        raise ValueError(
            f"frames of {height}x{width} (HxW) are too small for SSIM's 11-pixel window; "
            f"expected height and width >= {_SSIM_MIN_SIDE}"
        )
    values: list[float] = []
    for start in range(0, reference.shape[0], _CHUNK):
        ssim = structural_similarity_index_measure(
            _as_unit_batch(candidate[start : start + _CHUNK]),
            _as_unit_batch(reference[start : start + _CHUNK]),
            data_range=1.0,
            reduction="none",
        )
        values += [float(v) for v in ssim.reshape(-1)]
    return values


def lpips_unavailable_reason() -> str | None:
    """Why LPIPS cannot run here without a download (None if it can).

    torchmetrics' LPIPS builds a torchvision AlexNet with ImageNet weights, which torchvision fetches from the
    network unless they are already in the torch hub cache (``torch.hub.get_dir()/checkpoints``, moved by
    ``TORCH_HOME``). This only looks at files, so it never blocks on a network that is not there.
    """
    try:
        import torchvision
    except ImportError:
        return "torchvision is not installed (`pip install torchvision`)"
    except Exception as error:  # a torchvision built for another torch fails with RuntimeError etc.
        return f"torchvision failed to import: {_error_summary(error)}"
    weights = getattr(getattr(torchvision, "models", None), "AlexNet_Weights", None)
    if weights is None:
        return f"torchvision {getattr(torchvision, '__version__', '?')} has no AlexNet_Weights (needs >= 0.13)"
    # torch.hub names the cached file after the URL's basename.
    filename = os.path.basename(urlparse(weights.DEFAULT.url).path)
    checkpoint = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    if not os.path.isfile(checkpoint):
        return f"AlexNet backbone weights are not in the torch hub cache ({checkpoint}); not downloading them"
    spec = importlib.util.find_spec("torchmetrics")
    linear = os.path.join(
        next(iter(spec.submodule_search_locations or [""])) if spec else "",
        "functional",
        "image",
        "lpips_models",
        "alex.pth",
    )
    if not os.path.isfile(linear):
        return f"the LPIPS linear-layer weights torchmetrics ships are missing ({linear})"
    return None


def _mean_lpips(reference: np.ndarray, candidate: np.ndarray) -> float:
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", reduction="mean", normalize=True)
    with torch.no_grad():
        for start in range(0, reference.shape[0], _CHUNK):
            metric.update(
                _as_unit_batch(candidate[start : start + _CHUNK]), _as_unit_batch(reference[start : start + _CHUNK])
            )
        return float(metric.compute())


def compare_videos(reference: VideoLike, candidate: VideoLike, *, lpips: bool = True) -> dict[str, Any]:
    """Full-reference metrics of ``candidate`` against ``reference``, frame by frame, plus each one's flickering.

    Args:
        reference (`str`, `os.PathLike`, `np.ndarray` or `torch.Tensor`): the dense-attention video (anything
            :func:`load_video` accepts).
        candidate (`str`, `os.PathLike`, `np.ndarray` or `torch.Tensor`): the video to score, same frame count
            and size.
        lpips (`bool`, defaults to True): compute LPIPS when it can run offline (see
            :func:`lpips_unavailable_reason`).

    Returns:
        A dict: ``frames``, ``height``, ``width``; ``psnr`` (dB, mean over frames, ``inf`` if any frame is
        identical), ``per_frame_psnr``, ``identical_frames``; ``ssim`` (mean), ``per_frame_ssim``; ``lpips``
        (mean, lower is closer, or None) and ``lpips_unavailable`` (why it is None, else None);
        ``temporal_flickering`` ``{"reference": score, "candidate": score}`` (None for one-frame videos).

    Raises:
        ValueError: an input :func:`load_video` rejects, the two videos differ in frame count or size, or frames are
            smaller than 6 x 6 pixels (SSIM's window).
    """
    ref = load_video(reference)
    cand = load_video(candidate)
    if ref.shape != cand.shape:
        raise ValueError(
            f"reference has shape {tuple(ref.shape)} and candidate {tuple(cand.shape)} (T, H, W, 3); "
            "expected the same number of frames and the same frame size"
        )
    frames, height, width = ref.shape[:3]
    per_frame_psnr = _per_frame_psnr(ref, cand)
    per_frame_ssim = _per_frame_ssim(ref, cand)
    lpips_value: float | None = None
    reason = lpips_unavailable_reason() if lpips else "disabled (lpips=False)"
    if reason is None:
        try:
            lpips_value = _mean_lpips(ref, cand)
        except Exception as error:  # reported in the result rather than dropped or fatal
            reason = f"LPIPS failed: {_error_summary(error)}"
            logger.warning("%s", reason)
    return {
        "frames": int(frames),
        "height": int(height),
        "width": int(width),
        "psnr": float(np.mean(per_frame_psnr)),
        "per_frame_psnr": per_frame_psnr,
        "identical_frames": sum(math.isinf(v) for v in per_frame_psnr),
        "ssim": float(np.mean(per_frame_ssim)),
        "per_frame_ssim": per_frame_ssim,
        "lpips": lpips_value,
        "lpips_unavailable": reason,
        "temporal_flickering": {"reference": _temporal_flickering(ref), "candidate": _temporal_flickering(cand)},
    }


_PLOT_SIZE = (640, 320)
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 56, 20, 60, 40
_INF_BAND = 14  # pixels between the row of infinite values and the highest finite one
_LINE = (32, 96, 200)
_INF_MARKER = (200, 60, 40)
_AXIS = (20, 20, 20)
_GRID = (225, 225, 225)


def plot_per_frame_psnr(
    values: Sequence[float] | np.ndarray,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Image.Image:
    """Line plot of per-frame PSNR (PIL only): frame index across, dB up, with the min and max labelled.

    Infinite values (identical frames) are drawn as markers on a row at the top, above the finite range, and a
    note says how many there are.

    Args:
        values (sequence of `float`): PSNR per frame in dB, e.g. ``compare_videos(...)["per_frame_psnr"]``.
        path (`str` or `os.PathLike`, optional): write a PNG there.
        title (`str`, optional): heading (default ``"per-frame PSNR"``).

    Returns:
        The ``PIL.Image``.

    Raises:
        ValueError: ``values`` is empty, not one-dimensional, or holds NaN or -inf.
    """
    psnr = np.asarray(values, dtype=np.float64)
    if psnr.ndim != 1 or psnr.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence of per-frame PSNR, got shape {psnr.shape}")
    if np.isnan(psnr).any() or np.isneginf(psnr).any():
        raise ValueError("values hold NaN or -inf, expected finite PSNR values in dB or +inf for identical frames")
    finite = np.isfinite(psnr)
    n = psnr.size
    width, height = _PLOT_SIZE
    left, right = _MARGIN_LEFT, width - _MARGIN_RIGHT
    top, bottom = _MARGIN_TOP, height - _MARGIN_BOTTOM
    has_inf = not finite.all()
    finite_top = top + _INF_BAND if has_inf else top
    if finite.any():
        i_min = int(np.argmin(np.where(finite, psnr, np.inf)))
        i_max = int(np.argmax(np.where(finite, psnr, -np.inf)))
        low, high = float(psnr[i_min]), float(psnr[i_max])
    else:
        i_min = i_max = 0
        low = high = 0.0
    ticks = sorted({low, high}) if finite.any() else []
    if high == low:  # a flat line sits in the middle
        low, high = low - 0.5, high + 0.5

    def x_of(index: int) -> float:
        return (left + right) / 2 if n == 1 else left + index * (right - left) / (n - 1)

    def y_of(value: float) -> float:
        return top if math.isinf(value) else finite_top + (high - value) / (high - low) * (bottom - finite_top)

    canvas = Image.new("RGB", _PLOT_SIZE, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    lines = [title or "per-frame PSNR"]
    if finite.any():
        lines.append(f"min {psnr[i_min]:.2f} dB (frame {i_min}), max {psnr[i_max]:.2f} dB (frame {i_max})")
    if has_inf:
        lines.append(f"{int((~finite).sum())} of {n} frames identical (PSNR = inf), drawn on the top row")
    for row, line in enumerate(lines):
        draw.text((left, 6 + 14 * row), line, fill=_AXIS)

    # Axes, with the finite min and max as y ticks and the first and last frame as x ticks.
    for value in ticks:
        y = y_of(value)
        draw.line([(left, y), (right, y)], fill=_GRID)
        draw.line([(left - 4, y), (left, y)], fill=_AXIS)
        label = f"{value:.2f}"
        draw.text((left - 6 - draw.textlength(label), y - 6), label, fill=_AXIS)
    if has_inf:
        draw.text((left - 6 - draw.textlength("inf"), top - 6), "inf", fill=_INF_MARKER)
    draw.line([(left, top - 4), (left, bottom), (right, bottom)], fill=_AXIS)
    for index in {0, n - 1}:
        x = x_of(index)
        draw.line([(x, bottom), (x, bottom + 4)], fill=_AXIS)
        draw.text((x - draw.textlength(str(index)) / 2, bottom + 6), str(index), fill=_AXIS)
    draw.text(((left + right) / 2 - draw.textlength("frame") / 2, bottom + 20), "frame", fill=_AXIS)
    draw.text((8, top - 6 - 16), "dB", fill=_AXIS)

    points = [(x_of(i), y_of(float(v))) for i, v in enumerate(psnr)]
    if n > 1:
        draw.line(points, fill=_LINE, width=2)
    for (x, y), is_finite in zip(points, finite, strict=True):
        radius = 2 if is_finite else 3
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=_LINE if is_finite else _INF_MARKER)
    if path is not None:
        canvas.save(os.fspath(path), format="PNG")
    return canvas
