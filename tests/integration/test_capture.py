from __future__ import annotations

import torch
from transformer_cases import CASES, run

import dit_sparse as ds
from dit_sparse.integration.capture import capture_attention_inputs


def test_capture_records_dense_inputs_and_restores_the_model():
    model, inputs = CASES["hunyuan"]()
    vanilla = run(model, inputs)
    with capture_attention_inputs(model, layers=[1]) as calls:
        assert torch.equal(run(model, inputs), vanilla)  # dense while capturing
    assert not hasattr(model, "_dit_sparse_state")
    assert [(c.layer, c.step) for c in calls] == [(1, 0)]
    call = calls[0]
    assert call.layout.num_tokens == call.q.shape[2] and call.layout.text_position == "suffix"
    assert call.q.shape == call.k.shape == call.v.shape and call.q.shape[:2] == (2, 2)


def test_capture_keeps_an_applied_config():
    model, inputs = CASES["wan"]()
    ds.apply_sparse_attention(model, ds.SparseAttentionConfig("radial", block_size=16, backend="reference"))
    sparse = run(model, inputs)
    with capture_attention_inputs(model, steps=[0]) as calls:
        assert torch.equal(run(model, inputs), sparse)  # the applied config keeps running
    assert len(calls) == 2 and ds.summary(model)["method"] == "radial"
    assert [c.layer for c in calls] == [0, 1] and calls[0].transformer == "transformer"
