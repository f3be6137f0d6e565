from __future__ import annotations

import json
import subprocess
import sys

from dit_sparse.cli.main import main


def test_env_reports_backends_with_reasons(capsys):
    assert main(["env", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["packages"]["torch"]
    cpu = report["backends"]["cpu"]
    assert cpu["reference"] is None
    assert set(cpu) == {"reference", "gather", "flex", "flex-flash", "triton", "triton-tma"}
    assert "needs a CUDA GPU" in cpu["flex-flash"]
    assert cpu["gather"] is None
    assert report["devices"][0]["device"] == "cpu"


def test_env_text_and_console_script():
    result = subprocess.run(
        [sys.executable, "-m", "dit_sparse.cli.main", "env"], capture_output=True, text=True, check=True
    )
    assert "attention backends on cpu:" in result.stdout
    assert "reference  available" in result.stdout


def test_no_subcommand_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "env" in capsys.readouterr().err


def test_bench_delegates_to_the_attention_benchmark(tmp_path, capsys):
    import json

    out = tmp_path / "r.json"
    assert main(["bench", "attention", "--quick", "--no-progress", "--out", str(out)]) == 0
    assert "reference" in capsys.readouterr().out
    assert set(json.loads(out.read_text())) == {"environment", "settings", "results"}
