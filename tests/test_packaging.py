"""pyproject.toml lists its packages by hand (to map assets/ to dit_sparse.assets): the list must be complete."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_and_assets_are_mapped():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "dit_sparse").rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert set(config["packages"]) == found | {"dit_sparse.assets"}
    assert config["package-dir"] == {"dit_sparse.assets": "assets"}
    assert (ROOT / "assets" / "__init__.py").is_file()


def test_the_gpu_backend_table_ships_as_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "*.json" in config["package-data"]["dit_sparse.kernels"]
    assert (ROOT / "dit_sparse" / "kernels" / "gpu_backend_table.json").is_file()
