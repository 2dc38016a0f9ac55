"""`tools/gpu_check.sh`, the one command for a GPU machine: what it does where there is none."""
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "tools" / "gpu_check.sh"


def run(*args):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run the chapters")
def test_gpu_check_refuses_a_machine_without_a_gpu_in_one_line():
    for args in ((), ("--quick",), ("--quick", "02_finetune")):
        res = run(*args)
        assert (res.returncode, res.stdout) == (2, "")
        assert res.stderr.strip().splitlines() == [
            "gpu_check: no CUDA GPU is visible to torch here; run this on a GPU machine (on a CPU: finetune-book build)"]


def test_gpu_check_rejects_an_unknown_option_before_anything_runs():
    res = run("--fast")
    assert res.returncode == 2 and "unknown option --fast" in res.stderr


def _page(prose, *outputs):
    "A notebook: one markdown cell, then one code cell per printed output."
    cells = [{"cell_type": "markdown", "id": "p", "source": prose}]
    cells += [{"cell_type": "code", "id": f"c{i}", "source": "", "outputs": [{"output_type": "stream", "name": "stdout", "text": t}]}
              for i, t in enumerate(outputs)]
    return {"cells": cells}


def test_stale_numbers_finds_a_number_that_hides_behind_another_output():
    import importlib.util
    spec = importlib.util.spec_from_file_location("stale_numbers", Path(__file__).parents[1] / "tools" / "stale_numbers.py")
    tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool)
    prose = "Checkpointing ran at 0.68x, accuracy 0.740, logits 9.8e-05 apart, and 12.5% was padding."
    old = _page(prose, "speed 0.68x\n", "acc 0.74\n", "diff 9.8e-05\n", "share 0.125\n", "other table 0.68\n")
    new = _page(prose, "speed 0.75x\n", "acc 0.74\n", "diff 1.9e-04\n", "share 0.125\n", "other table 0.68\n")
    assert tool.stale_numbers(old, new) == [("p", "0.68x"), ("p", "9.8e-05")]  # 0.68 is still printed once: not enough
    assert tool.stale_numbers(old, old) == []
    moved = _page(prose, "speed 0.68x\n", "acc 0.75\n", "diff 9.8e-05\n", "share 0.130\n", "other table 0.68\n")
    assert tool.stale_numbers(old, moved) == [("p", "0.740"), ("p", "12.5%")]  # at the precision written, and percentages
