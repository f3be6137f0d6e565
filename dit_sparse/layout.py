"""Token layout of a video DiT's self-attention sequence, and the reorderings of its (F, H, W) grid.

After patchify a video latent of ``frames x height x width`` cells becomes a sequence of tokens in
frame-major order ``(F, H, W)``: token ``f * H * W + h * W + w``. Joint models put text tokens before
(CogVideoX, Flux) or after (HunyuanVideo) the video tokens. PAROAttention and SVG's temporal heads reorder
the video tokens so that a head's pattern becomes block-local; :meth:`VideoLayout.permutation` gives that
reordering for any of the six orders of (F, H, W) and :meth:`VideoLayout.inverse_permutation` undoes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import torch

TEXT_POSITIONS = ("none", "prefix", "suffix")
ORDERS = tuple("".join(p) for p in permutations("FHW"))  # ("FHW", "FWH", "HFW", "HWF", "WFH", "WHF")


@dataclass(frozen=True)
class VideoLayout:
    """Token grid of one self-attention call.

    Args:
        frames (`int`): latent frames after temporal patchify (F').
        height (`int`): token rows per frame after spatial patchify (H').
        width (`int`): token columns per frame after spatial patchify (W').
        text_len (`int`, defaults to 0): number of text tokens in the joint sequence.
        text_position (`str`, defaults to ``"none"``): ``"prefix"`` (text first: CogVideoX, Flux),
            ``"suffix"`` (text last: HunyuanVideo) or ``"none"`` (video only: Wan).

    Example:
        >>> layout = VideoLayout(frames=3, height=2, width=4, text_len=5, text_position="prefix")
        >>> layout.num_tokens, layout.video_tokens, layout.video_start
        (29, 24, 5)
    """

    frames: int
    height: int
    width: int
    text_len: int = 0
    text_position: str = "none"

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"VideoLayout.{name} must be a positive int, got {value!r}")
        if isinstance(self.text_len, bool) or not isinstance(self.text_len, int) or self.text_len < 0:
            raise ValueError(f"VideoLayout.text_len must be a non-negative int, got {self.text_len!r}")
        if self.text_position not in TEXT_POSITIONS:
            raise ValueError(f"VideoLayout.text_position must be one of {TEXT_POSITIONS}, got {self.text_position!r}")
        if self.text_len > 0 and self.text_position == "none":
            raise ValueError(
                f"VideoLayout has text_len={self.text_len} but text_position='none'; "
                "say where the text tokens are ('prefix' or 'suffix')"
            )

    @property
    def frame_tokens(self) -> int:
        """Tokens per latent frame (H' * W')."""
        return self.height * self.width

    @property
    def video_tokens(self) -> int:
        return self.frames * self.height * self.width

    @property
    def num_tokens(self) -> int:
        return self.video_tokens + self.text_len

    @property
    def video_start(self) -> int:
        """Index of the first video token in the sequence."""
        return self.text_len if self.text_position == "prefix" else 0

    @property
    def video_slice(self) -> slice:
        return slice(self.video_start, self.video_start + self.video_tokens)

    @property
    def text_slice(self) -> slice:
        if self.text_position == "prefix":
            return slice(0, self.text_len)
        if self.text_position == "suffix":
            return slice(self.video_tokens, self.num_tokens)
        return slice(0, 0)

    def video_coordinates(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(video_tokens, 3) LongTensor of (f, h, w) for each video token in native order."""
        f, h, w = torch.meshgrid(
            torch.arange(self.frames, device=device),
            torch.arange(self.height, device=device),
            torch.arange(self.width, device=device),
            indexing="ij",
        )
        return torch.stack([f.reshape(-1), h.reshape(-1), w.reshape(-1)], dim=-1)

    def permutation(self, order: str = "FHW", device: torch.device | str | None = None) -> torch.Tensor:
        """Token permutation that lays the video tokens out in ``order`` (outermost axis first).

        ``x[..., perm, :]`` reorders a sequence; text tokens keep their positions. ``"FHW"`` is the
        identity; ``"HWF"`` puts frames innermost, so the same pixel in consecutive frames is contiguous.

        Returns:
            LongTensor of shape ``(num_tokens,)``.
        """
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        grid = torch.arange(self.video_tokens, device=device).view(self.frames, self.height, self.width)
        dims = tuple("FHW".index(axis) for axis in order)
        video = grid.permute(dims).reshape(-1) + self.video_start  # (video_tokens,)
        return self._with_text(video)

    def inverse_permutation(self, order: str = "FHW", device: torch.device | str | None = None) -> torch.Tensor:
        """The ``inv`` with ``x[..., perm, :][..., inv, :] == x`` for ``perm = permutation(order)``."""
        return invert_permutation(self.permutation(order, device=device))

    def tile_permutation(self, tile: tuple[int, int, int], device: torch.device | str | None = None) -> torch.Tensor:
        """Permutation that makes each (t, h, w)-cell tile of video tokens contiguous (text stays in place).

        Tiles are ordered frame-tile-major, then row, then column; inside a tile tokens keep (F, H, W)
        order. Tiles at the far edges are partial when the grid does not divide, and hold fewer tokens.
        ``x[..., perm, :]`` reorders; :func:`invert_permutation` undoes it.
        """
        if len(tile) != 3 or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in tile):
            raise ValueError(f"tile must be three positive ints (t, h, w), got {tile!r}")
        coords = self.video_coordinates(device)  # (video_tokens, 3), native order
        tiles = coords // torch.tensor(tile, device=coords.device)  # tile index per axis
        n_tiles = [-(-n // t) for n, t in zip((self.frames, self.height, self.width), tile, strict=True)]
        tile_id = (tiles[:, 0] * n_tiles[1] + tiles[:, 1]) * n_tiles[2] + tiles[:, 2]
        # stable sort by tile id keeps (F, H, W) order inside each tile
        video = torch.sort(tile_id, stable=True).indices + self.video_start
        return self._with_text(video)

    def _with_text(self, video: torch.Tensor) -> torch.Tensor:
        text = torch.arange(self.text_len, device=video.device)
        if self.text_position == "prefix":
            return torch.cat([text, video])
        if self.text_position == "suffix":
            return torch.cat([video, text + self.video_tokens])
        return video


def invert_permutation(perm: torch.Tensor) -> torch.Tensor:
    """``inv`` with ``x[..., perm, :][..., inv, :] == x``; works on the last dim of (..., N) permutations."""
    inv = torch.empty_like(perm)
    inv.scatter_(-1, perm, torch.arange(perm.shape[-1], device=perm.device).expand_as(perm))
    return inv
