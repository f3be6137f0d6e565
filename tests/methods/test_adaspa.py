from __future__ import annotations

import torch

from dit_sparse.methods.adaspa import select_head_adaptive


def test_head_adaptive_selection_meets_the_average_and_favours_diffuse_heads():
    torch.manual_seed(0)
    concentrated = torch.full((16, 16), 1e-4)
    concentrated[torch.arange(16), torch.arange(16)] = 1.0  # all mass on the diagonal
    diffuse = torch.rand(16, 16) + 0.5
    mass = torch.stack([concentrated, diffuse])[None]
    mass = mass / mass.sum(-1, keepdim=True)  # (1, 2, 16, 16)
    kept = select_head_adaptive(mass, density=0.3)
    assert kept.any(-1).all()
    assert kept.float().mean() <= 0.3 + 1e-6
    assert kept.float().mean() > 0.2  # the budget is used, not wasted
    per_head = kept.float().mean(dim=(0, 2, 3))
    assert per_head[0] < per_head[1]  # the concentrated head needs fewer blocks for the same recall
    recall = (mass * kept).sum(-1).mean(dim=(0, 2))
    assert abs(float(recall[0] - recall[1])) < 0.35  # one shared threshold, not one shared count
