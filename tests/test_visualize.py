from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import dit_sparse as ds
from dit_sparse.cli.main import main
from dit_sparse.visualize import DROPPED, KEPT, render_mask


def test_render_draws_each_block_in_its_colour(tmp_path):
    blocks = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    blocks[0, 0] = torch.eye(4, dtype=torch.bool)
    blocks[0, 1] = True
    mask = ds.BlockSparseMask.from_dense(blocks, 16, (64, 64))
    image = render_mask(mask, tmp_path / "m.png", size=40)
    assert Image.open(tmp_path / "m.png").size == image.size
    pixels = np.asarray(image)
    # head 0 (first tile): block (0, 0) kept, block (0, 1) dropped; cell = 40 // 4 = 10 px, tile at (8, 8 + 16)
    assert tuple(pixels[24 + 5, 8 + 5]) == KEPT
    assert tuple(pixels[24 + 5, 8 + 15]) == DROPPED
    with pytest.raises(ValueError, match=r"heads must be a non-empty list in \[0, 2\)"):
        render_mask(mask, heads=[2])


def test_mask_command_writes_a_png(tmp_path, capsys):
    out = tmp_path / "radial.png"
    code = main(
        ["mask", "radial", "--frames", "8", "--height", "4", "--width", "4", "--block-size", "16", "--out", str(out)]
    )
    assert code == 0 and out.exists()
    assert "density" in capsys.readouterr().out
    assert (
        main(
            [
                "mask",
                "diagonal",
                "--frames",
                "2",
                "--height",
                "2",
                "--width",
                "2",
                "--param",
                "spiral=1",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "diagonal does not take ['spiral']" in capsys.readouterr().err
