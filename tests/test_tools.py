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
