from __future__ import annotations

import pytest
import torch

from dit_sparse import SparseAttentionConfig
from dit_sparse.bench.transformer import MODELS, build_transformer, model_inputs, run_transformer_benchmark


def test_one_layer_wan_dense_vs_radial():
    configs = {
        "dense": SparseAttentionConfig("dense"),
        "radial": SparseAttentionConfig("radial", block_size=16, backend="reference"),
    }
    rows = run_transformer_benchmark(
        "wan2.1-1.3b", (33, 64, 64), configs, steps=1, num_layers=1, dtype=torch.float32, device="cpu"
    )
    assert [row["method"] for row in rows] == ["vanilla (no dit-sparse)", "dense", "radial"]
    assert all(row["seconds_per_step"] > 0 and row["speedup"] > 0 for row in rows)
    assert rows[1]["mean_density"] == 1.0 and rows[2]["mean_density"] < 1.0
    assert rows[2]["layout"] == {"frames": 9, "height": 4, "width": 4, "text_len": 0, "text_position": "none"}
    assert 0 < rows[2]["attention_share"] < 1


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_architecture_builds_and_runs_scaled_down(name):
    model = build_transformer(name, num_layers=1, dtype=torch.float32, device="cpu")
    inputs = model_inputs(name, (9, 32, 32), dtype=torch.float32, device="cpu")
    with torch.inference_mode():
        out = model(**inputs).sample
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="unknown model"):
        build_transformer("sora")


def test_native_resolution_is_each_models_own_and_unknown_names_are_refused():
    from dit_sparse.bench.transformer import resolution_of

    assert resolution_of("ltx-video-2b", "native") == (161, 512, 704)
    assert resolution_of("mochi-1", "480p") == (81, 480, 832)
    assert resolution_of("mochi-1", (9, 32, 32)) == (9, 32, 32)
    with pytest.raises(ValueError, match="unknown resolution"):
        resolution_of("mochi-1", "1080p")


def test_scaled_down_wan_derived_models_keep_their_extra_blocks():
    vace = build_transformer("wan2.1-vace-1.3b", num_layers=4, dtype=torch.float32, device="cpu")
    assert vace.config.vace_layers == [0, 2]  # every 2nd layer, as the 1.3B's 15 of 30
    animate = build_transformer("wan2.2-animate-14b", num_layers=1, dtype=torch.float32, device="cpu")
    assert len(animate.face_adapter) == 1
