"""Every name the README and the architecture contract write as ``ds.x.y`` works after ``import dit_sparse as ds``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import dit_sparse as ds

ROOT = Path(__file__).resolve().parents[1]

# The names ../shared/ARCHITECTURE.md shows (that file lives outside the repository, so CI has no copy).
CONTRACT_NAMES = [
    "ds.apply_sparse_attention",
    "ds.remove_sparse_attention",
    "ds.summary",
    "ds.block_sparse_attention",
    "ds.BlockSparseMask.from_dense",
    "ds.SparseAttentionConfig",
    "ds.SparseAttentionConfig.recommended",
    "ds.VideoLayout",
    "ds.SparsityPlan.load",
    "ds.HeadPattern",
    "ds.calibrate",
    "ds.calibration.search_heads",
    "ds.embedded.load_pipeline",
    "ds.embedded.GENERATION_DEFAULTS",
    "ds.evaluation.compare_videos",
    "ds.visualize.render_mask",
    "ds.pipelines.SparseWanPipeline",
    "ds.patterns.radial",
    "ds.list_backends",
    "ds.pyramid_attention",
    "ds.LevelMask",
]


def documented_names() -> list[str]:
    """``ds.x.y`` as written in the README (code and prose), plus the contract's."""
    found = re.findall(r"\bds(?:\.[A-Za-z_][A-Za-z_0-9]*)+", (ROOT / "README.md").read_text())
    return sorted(set(found) | set(CONTRACT_NAMES))


def resolve(dotted: str):
    obj = ds
    for part in dotted.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


def test_readme_names_are_found() -> None:
    names = documented_names()
    assert "ds.embedded.load_pipeline" in names and len(names) > len(CONTRACT_NAMES) // 2


@pytest.mark.parametrize("dotted", documented_names())
def test_documented_name_resolves(dotted: str) -> None:
    assert resolve(dotted) is not None


@pytest.mark.parametrize("name", ds.__all__)
def test_public_name_resolves(name: str) -> None:
    assert getattr(ds, name) is not None
    assert name in dir(ds)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'embeded'"):
        ds.embeded  # noqa: B018


def test_import_stays_light() -> None:
    """``import dit_sparse`` loads neither diffusers, imageio, matplotlib nor triton; ``ds.embedded`` loads on use."""
    code = (
        "import sys, dit_sparse as ds\n"
        "heavy = ('diffusers', 'imageio', 'matplotlib', 'triton')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "ds.embedded.load_pipeline\n"
        "print('dit_sparse.embedded' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:2] == ["[]", "True"]
