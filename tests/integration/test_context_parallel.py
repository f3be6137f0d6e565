"""Sparse attention under diffusers' Ulysses context parallelism: two CPU processes (gloo) against one.

The two workers are this file run as a script in a torchrun-like environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` on a free port); every scenario runs in one launch, under a
deadline after which both are killed. The single-process references are computed in the test process.

diffusers 0.42.1's ``ModelMixin._resolve_parallel_config`` computes its device as
``rank % torch.accelerator.device_count()``, which divides by zero on a machine without an accelerator. The
workers, processes that exist only for these tests, replace ``torch.accelerator.device_count`` before
anything else runs. The library does not: on a CPU one process already uses every core, so multi-process
context parallelism there is useful for testing only, and ``dit-sparse generate --ulysses`` says so instead.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

HEADS = 4
WORLD = 2
DEADLINE_S = 240
TESTS_DIR = Path(__file__).resolve().parents[1]

# Distinct per-head patterns, so a rank that took the wrong heads uses a different mask.
ASSIGNMENT = {
    0: ["diagonal", "multi_diagonal", "vertical_stripe", "diagonal+vertical_stripe"],
    1: ["skip", "multi_diagonal", "diagonal", "dense"],
}
SCENARIOS = {
    # name: (method, parameters, apply dit-sparse before enable_parallelism?)
    "sparse_vdit": ("sparse_vdit", {"assignment": ASSIGNMENT, "dense_heads": {0: [3]}}, False),
    "radial": ("radial", {}, True),
    "svg": ("svg", {}, True),
    "draft": ("draft", {"window": [2, 8], "fraction": 0.2}, False),
}
# 3 heads on 2 ranks with ulysses_anything: diffusers pads the heads to 4, so rank 0 holds heads 0-1 and rank 1
# head 2. (An uneven token count is not tested: diffusers' final gather of unequal chunks, a variable-size
# all_gather, is rejected by gloo.)
ODD_ASSIGNMENT = {0: ["diagonal", "multi_diagonal", "vertical_stripe"], 1: ["multi_diagonal", "skip", "diagonal"]}


def tiny_wan(heads: int = HEADS):
    """A 2-layer Wan transformer with ``heads`` heads of 16 and inputs of 7 x 6 x 7 = 294 tokens."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=16, in_channels=4, out_channels=4,
        text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=64,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    inputs = {
        "hidden_states": torch.randn(2, 4, 7, 12, 14, generator=generator),  # (B, C, F, H, W)
        "timestep": torch.tensor([900.0, 900.0]),
        "encoder_hidden_states": torch.randn(2, 5, 32, generator=generator),
    }
    return model.eval(), inputs


def tiny_flux():
    """The tiny Flux of ``transformer_cases`` on 10 x 11 image and 8 text tokens, which split evenly in two."""
    from transformer_cases import flux

    model, inputs = flux()
    rows, cols, text = 10, 11, 8
    img_ids = torch.zeros(rows * cols, 3)
    img_ids[:, 1] = torch.arange(rows).repeat_interleave(cols)
    img_ids[:, 2] = torch.arange(cols).repeat(rows)
    inputs.update(
        hidden_states=torch.randn(2, rows * cols, 8),
        encoder_hidden_states=torch.randn(2, text, 32),
        img_ids=img_ids,
        txt_ids=torch.zeros(text, 3),
    )
    return model, inputs


def tiny_ltx_video():
    """A 2-layer LTX-Video transformer with 4 heads of 8 on LTXPipeline-style inputs: 5 x 9 x 8 = 360 packed
    tokens (an even split; the grid comes from num_frames, height and width, which are not split) and one
    timestep per sample.

    Without ``encoder_attention_mask``, which LTXPipeline always passes: diffusers 0.42.1 itself fails under
    Ulysses with that T5 mask in the cross-attention attn2 (a batch-size mismatch, with or without dit-sparse),
    as it does with the per-token timesteps of LTXImageToVideoPipeline and LTXConditionPipeline.
    """
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(0)
    model = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, num_attention_heads=HEADS, attention_head_dim=8, cross_attention_dim=32,
        num_layers=2, caption_channels=32,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    inputs = {
        "hidden_states": torch.randn(2, 5 * 9 * 8, 8, generator=generator),  # (B, F * H * W, C), frame-major
        "encoder_hidden_states": torch.randn(2, 16, 32, generator=generator),
        "encoder_attention_mask": None,  # a required argument of the forward
        "timestep": torch.tensor([900.0, 900.0]),
        "num_frames": 5,
        "height": 9,
        "width": 8,
        "rope_interpolation_scale": (8 / 25, 32, 32),
    }
    return model.eval(), inputs


def config_for(name: str):
    import dit_sparse as ds

    if name == "odd_heads":
        return ds.SparseAttentionConfig("sparse_vdit", block_size=16, backend="reference", assignment=ODD_ASSIGNMENT)
    method, params, _ = SCENARIOS[name]
    return ds.SparseAttentionConfig(method, block_size=16, backend="reference", **params)


def forward(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


class MaskRecorder:
    """Wraps the state's kernel entry point and records, per call, the layer and the block table it ran."""

    def __init__(self, kernel) -> None:
        self.kernel = kernel
        self.masks: list[tuple[int, torch.Tensor]] = []

    def __call__(self, q, k, v, mask, **kwargs):
        from dit_sparse.integration.bridge import active_layer

        self.masks.append((active_layer()[1], mask.blocks.clone()))
        return self.kernel(q, k, v, mask, **kwargs)


# -- the workers ------------------------------------------------------------------------------------------


def _worker_methods(rank: int, out: Path) -> None:
    """Every scenario under Ulysses on 2 ranks; saves outputs, recorded masks and error messages."""
    from diffusers import ContextParallelConfig, ParallelConfig

    import dit_sparse as ds
    from dit_sparse.integration import state as state_module

    recorder = MaskRecorder(state_module.block_sparse_attention)
    state_module.block_sparse_attention = recorder  # this process exists for the test only
    results: dict = {"outputs": {}, "masks": {}, "errors": {}}

    def parallel(model, **cp) -> None:
        model.enable_parallelism(config=ParallelConfig(context_parallel_config=ContextParallelConfig(**cp)))

    for name, (_, _, apply_first) in SCENARIOS.items():
        model, inputs = tiny_wan()
        if apply_first:
            ds.apply_sparse_attention(model, config_for(name))
            parallel(model, ulysses_degree=WORLD)
        else:
            parallel(model, ulysses_degree=WORLD)
            ds.apply_sparse_attention(model, config_for(name))
        recorder.masks = []
        results["outputs"][name] = forward(model, inputs)
        results["masks"][name] = recorder.masks
        if name == "radial":  # applied before enable_parallelism: removal must keep the parallel config
            ds.remove_sparse_attention(model)
            results["outputs"]["removed"] = forward(model, inputs)

    model, inputs = tiny_ltx_video()  # radial applied after enable_parallelism (Wan's radial: before)
    parallel(model, ulysses_degree=WORLD)
    ds.apply_sparse_attention(model, config_for("radial"))
    recorder.masks = []
    results["outputs"]["ltx_video"] = forward(model, inputs)
    results["masks"]["ltx_video"] = recorder.masks

    model, inputs = tiny_wan(heads=3)
    parallel(model, ulysses_degree=WORLD, ulysses_anything=True)
    ds.apply_sparse_attention(model, config_for("odd_heads"))
    recorder.masks = []
    results["outputs"]["odd_heads"] = forward(model, inputs)
    results["masks"]["odd_heads"] = recorder.masks

    model, inputs = tiny_wan()
    parallel(model, ring_degree=WORLD)
    ds.apply_sparse_attention(model, config_for("radial"))
    try:
        forward(model, inputs)
    except ValueError as error:
        results["errors"]["ring"] = str(error)

    for apply_first in (True, False):  # Flux: joint text and image, refused whichever hook runs first
        model, inputs = tiny_flux()
        if apply_first:
            ds.apply_sparse_attention(model, config_for("radial"))
        parallel(model, ulysses_degree=WORLD)
        if not apply_first:
            ds.apply_sparse_attention(model, config_for("radial"))
        try:
            forward(model, inputs)
        except ValueError as error:
            results["errors"][f"flux_apply_first={apply_first}"] = str(error)
    torch.save(results, out / f"rank{rank}.pt")


def _worker_main() -> None:
    torch.accelerator.device_count = lambda: 1  # see the module docstring
    torch.set_num_threads(1)
    import torch.distributed as dist

    scenario, out = sys.argv[1], Path(sys.argv[2])
    if scenario == "methods":
        dist.init_process_group("gloo")
        try:
            _worker_methods(dist.get_rank(), out)
        finally:
            dist.destroy_process_group()
    else:  # the command line, which joins the process group itself
        from dit_sparse.cli.main import main

        raise SystemExit(main(json.loads(scenario)))


# -- the launcher -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(scenario: str, out: Path) -> list[subprocess.CompletedProcess]:
    """Run this file as ``WORLD`` workers; fails the test (and kills them) past ``DEADLINE_S``."""
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = dict(os.environ)
        env.update(
            RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
            PYTHONPATH=os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]),
        )  # fmt: skip
        log = open(out / f"rank{rank}.log", "w+")
        proc = subprocess.Popen([sys.executable, __file__, scenario, str(out)], env=env, stdout=log, stderr=log)
        procs.append((proc, log))
    deadline = time.monotonic() + DEADLINE_S
    results = []
    try:
        for proc, log in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            log.seek(0)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, log.read(), ""))
    except subprocess.TimeoutExpired:
        logs = []
        for proc, log in procs:
            proc.kill()
            proc.wait()
            log.seek(0)
            logs.append(log.read()[-2000:])
        pytest.fail(f"context-parallel workers still running after {DEADLINE_S} s; logs:\n" + "\n---\n".join(logs))
    finally:
        for _, log in procs:
            log.close()
    return results


@pytest.fixture(scope="module")
def worker_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("context-parallel")
    for rank, done in enumerate(launch("methods", out)):
        assert done.returncode == 0, f"rank {rank} failed:\n{done.stdout[-4000:]}"
    return [torch.load(out / f"rank{rank}.pt") for rank in range(WORLD)]


def single_process(name: str, monkeypatch) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
    import dit_sparse as ds
    from dit_sparse.integration import state as state_module

    recorder = MaskRecorder(state_module.block_sparse_attention)
    monkeypatch.setattr(state_module, "block_sparse_attention", recorder)
    model, inputs = tiny_wan(heads=3 if name == "odd_heads" else HEADS)
    ds.apply_sparse_attention(model, config_for(name))
    return forward(model, inputs), recorder.masks


# -- the tests --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sparse_vdit", "radial", "svg", "draft"])
def test_ulysses_output_equals_single_process(name, worker_results, monkeypatch):
    """Static (sparse_vdit, radial) and dynamic (svg, draft: masks searched from q and k) methods, applied
    before or after enable_parallelism: every rank's output is the single-process output."""
    expected, _ = single_process(name, monkeypatch)
    dense, _ = tiny_wan()
    assert (forward(dense, tiny_wan()[1]) - expected).abs().max() > 1e-3  # the method is really sparse here
    for rank in range(WORLD):
        torch.testing.assert_close(worker_results[rank]["outputs"][name], expected, atol=1e-5, rtol=1e-5)


def test_ltx_video_ulysses_output_equals_single_process(worker_results):
    """LTX-Video (video-only self-attention, layout from the forward's grid arguments) with radial: every
    rank runs its 2 heads over the whole sequence, and its output is the single-process output."""
    import dit_sparse as ds

    dense, inputs = tiny_ltx_video()
    model, _ = tiny_ltx_video()
    ds.apply_sparse_attention(model, config_for("radial"))
    expected = forward(model, inputs)
    assert ds.summary(model)["mean_density"] < 1
    assert (forward(dense, inputs) - expected).abs().max() > 1e-3  # radial is really sparse here
    for rank in range(WORLD):
        torch.testing.assert_close(worker_results[rank]["outputs"]["ltx_video"], expected, atol=1e-5, rtol=1e-5)
        used = worker_results[rank]["masks"]["ltx_video"]  # this rank's 2 heads of the whole 360-token sequence
        assert [(layer, tuple(blocks.shape)) for layer, blocks in used] == [(0, (1, 2, 23, 23)), (1, (1, 2, 23, 23))]


def test_per_head_assignment_is_sliced_by_rank(worker_results, monkeypatch):
    """An assignment for the model's 4 heads: rank 0 runs heads 0-1, rank 1 heads 2-3, skip and dense heads
    included (layer 1 head 0 is skipped, layer 0 head 3 is in dense_heads)."""
    _, reference = single_process("sparse_vdit", monkeypatch)
    assert [layer for layer, _ in reference] == [0, 1]
    per_rank = HEADS // WORLD
    for rank in range(WORLD):
        used = worker_results[rank]["masks"]["sparse_vdit"]
        assert [layer for layer, _ in used] == [0, 1]
        for (layer, blocks), (_, full) in zip(used, reference, strict=True):
            assert blocks.shape[1] == per_rank
            assert torch.equal(blocks, full[:, rank * per_rank : (rank + 1) * per_rank]), (rank, layer)
    rank0, rank1 = (worker_results[r]["masks"]["sparse_vdit"] for r in range(WORLD))
    assert not rank0[1][1][0, 0].any()  # layer 1 head 0: skipped, no blocks, on rank 0 only
    assert rank1[1][1][0].any(dim=-1).all()
    assert rank1[0][1][0, 1].all()  # layer 0 head 3 (dense_heads): rank 1's second head
    assert not rank0[0][1][0, 1].all()


@pytest.mark.parametrize("name", ["svg", "draft"])
def test_dynamic_method_searches_local_heads_only(name, worker_results, monkeypatch):
    """Each rank searches its own heads from its q and k, and finds what one process finds for those heads."""
    _, reference = single_process(name, monkeypatch)
    per_rank = HEADS // WORLD
    for rank in range(WORLD):
        used = worker_results[rank]["masks"][name]
        assert [layer for layer, _ in used] == [layer for layer, _ in reference] == [0, 1]
        for (layer, blocks), (_, full) in zip(used, reference, strict=True):
            assert torch.equal(blocks, full[:, rank * per_rank : (rank + 1) * per_rank]), (rank, layer)


def test_uneven_heads_with_ulysses_anything(worker_results, monkeypatch):
    """3 heads on 2 ranks: rank 0 runs heads 0-1 and rank 1 head 2 of the assignment (skip included)."""
    expected, reference = single_process("odd_heads", monkeypatch)
    heads = [slice(0, 2), slice(2, 3)]
    for rank in range(WORLD):
        torch.testing.assert_close(worker_results[rank]["outputs"]["odd_heads"], expected, atol=1e-5, rtol=1e-5)
        used = worker_results[rank]["masks"]["odd_heads"]
        assert len(used) == len(reference) == 2
        for (layer, blocks), (_, full) in zip(used, reference, strict=True):
            assert torch.equal(blocks, full[:, heads[rank]]), (rank, layer)


def test_removal_after_enable_parallelism_restores_dense(worker_results):
    """Applied, then parallelized, then removed: the restored processors keep the parallel config."""
    model, inputs = tiny_wan()
    expected = forward(model, inputs)
    for rank in range(WORLD):
        torch.testing.assert_close(worker_results[rank]["outputs"]["removed"], expected, atol=1e-5, rtol=1e-5)


def test_ring_attention_is_refused_with_the_fix(worker_results):
    for rank in range(WORLD):
        message = worker_results[rank]["errors"].get("ring", "")
        assert "ring_degree=2" in message and "ContextParallelConfig(ulysses_degree=N)" in message


@pytest.mark.parametrize("apply_first", [True, False])
def test_joint_text_models_are_refused(worker_results, apply_first):
    for rank in range(WORLD):
        message = worker_results[rank]["errors"].get(f"flux_apply_first={apply_first}", "")
        assert message.startswith("flux: dit-sparse supports context parallelism for video-only self-attention")


@pytest.mark.parametrize(
    ("model", "parallel", "message"),
    [
        ("wan", {"tensor_parallel_config": {"tp_degree": 2}}, "wan: dit-sparse does not support diffusers tensor"),
        (
            "wan",
            {"context_parallel_config": {"ring_degree": 2}},
            "wan: dit-sparse supports Ulysses context parallelism",
        ),
        ("flux", {"context_parallel_config": {"ulysses_degree": 2}}, "flux: dit-sparse supports context parallelism"),
    ],
)
def test_unsupported_parallelism_is_refused_before_attention(model, parallel, message):
    from types import SimpleNamespace

    from diffusers import ContextParallelConfig, ParallelConfig, TensorParallelConfig

    from dit_sparse.integration.specs import SPECS
    from dit_sparse.integration.state import check_parallelism

    spec = next(spec for spec in SPECS if spec.name == model)
    classes = {"tensor_parallel_config": TensorParallelConfig, "context_parallel_config": ContextParallelConfig}
    config = ParallelConfig(**{key: classes[key](**value) for key, value in parallel.items()})
    with pytest.raises(ValueError) as error:
        check_parallelism(SimpleNamespace(_parallel_config=config), spec)
    assert str(error.value).startswith(message)


def test_a_token_count_that_does_not_split_is_refused():
    from diffusers import ContextParallelConfig

    from dit_sparse import VideoLayout
    from dit_sparse.integration.state import check_token_split

    message = "wan: 189 tokens (3 x 9 x 7 after patchify) do not split evenly over ulysses_degree=2 ranks"
    with pytest.raises(ValueError, match=re.escape(message)):
        check_token_split(ContextParallelConfig(ulysses_degree=2), "wan", VideoLayout(3, 9, 7))
    check_token_split(ContextParallelConfig(ulysses_degree=2), "wan", VideoLayout(3, 9, 8))
    # diffusers pads an uneven split itself under ulysses_anything
    check_token_split(ContextParallelConfig(ulysses_degree=2, ulysses_anything=True), "wan", VideoLayout(3, 9, 7))


def test_a_plan_for_another_head_count_is_refused():
    from dit_sparse import BlockSparseMask, VideoLayout
    from dit_sparse.integration.state import _local_plan
    from dit_sparse.methods import AttentionCall, AttentionPlan

    q = torch.zeros(1, 2, 32, 16)  # this rank's 2 of 4 heads
    call = AttentionCall(0, 0, None, VideoLayout(2, 4, 4), q, q, q, total_heads=4, head_offset=2)
    plan = AttentionPlan(BlockSparseMask.from_dense(torch.ones(1, 3, 2, 2, dtype=torch.bool), 16, (32, 32)))
    with pytest.raises(ValueError, match=r"the method planned 3 heads; expected the layer's 4 or this rank's 2"):
        _local_plan(plan, call, 0)


# -- the command line -------------------------------------------------------------------------------------

# 5 x 9 x 8 = 360 tokens: an even split over 2 ranks. sparse_vdit's default patterns differ between even and
# odd heads, so the two ranks measure different densities and the report must combine them.
CLI_ARGS = [
    "generate", "--prompt", "a red circle", "--steps", "2", "--frames", "17", "--height", "144", "--width", "128",
    "--guidance", "3", "--method", "sparse_vdit", "--block-size", "16", "--backend", "reference",
]  # fmt: skip


def test_generate_under_torchrun(tmp_path, capsys):
    """``dit-sparse generate --ulysses 2`` on 2 processes: rank 0 alone writes and reports, and its video and
    densities are those of one process."""
    import imageio.v2 as imageio
    import numpy as np
    from tiny_models import tiny_wan_pipeline

    from dit_sparse.cli.main import main

    folder = tmp_path / "tiny-wan"
    tiny_wan_pipeline().save_pretrained(folder)
    args = [*CLI_ARGS, "--model", str(folder)]
    runs = launch(json.dumps([*args, "--ulysses", "2", "--out", str(tmp_path / "cp")]), tmp_path)
    for rank, done in enumerate(runs):
        assert done.returncode == 0, f"rank {rank} failed:\n{done.stdout[-4000:]}"
    assert "wrote " in runs[0].stdout and "wrote " not in runs[1].stdout
    assert sorted(path.name for path in (tmp_path / "cp").iterdir()) == ["report.json", "sparse.mp4"]
    assert main([*args, "--out", str(tmp_path / "single")]) == 0
    capsys.readouterr()

    parallel = json.loads((tmp_path / "cp" / "report.json").read_text())
    single = json.loads((tmp_path / "single" / "report.json").read_text())
    assert parallel["ulysses"] == 2 and single["ulysses"] == 1
    assert parallel["summary"]["mean_density"] < 1
    assert parallel["summary"]["mean_density"] == pytest.approx(single["summary"]["mean_density"], abs=1e-9)
    assert parallel["summary"]["per_layer"] == pytest.approx(single["summary"]["per_layer"], abs=1e-9)
    frames = [np.asarray(imageio.mimread(tmp_path / run / "sparse.mp4"), dtype=np.int16) for run in ("cp", "single")]
    assert np.abs(frames[0] - frames[1]).max() <= 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "--ulysses 2 needs 2 processes started by torchrun, found WORLD_SIZE=1"),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "--ulysses needs an accelerator"),
    ],
)
def test_generate_ulysses_bad_launch(env, message, tmp_path, capsys, monkeypatch):
    from dit_sparse.cli.main import main

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if torch.cuda.is_available() or torch.accelerator.device_count():
        pytest.skip("the accelerator message is for machines without one")
    code = main([*CLI_ARGS, "--model", "/not/loaded", "--ulysses", "2", "--out", str(tmp_path / "x")])
    assert code == 2
    assert message in capsys.readouterr().err


if __name__ == "__main__":
    _worker_main()
