"""The docs site's first step, nbdev's processing of the pages (Quarto renders what it writes; CI has no Quarto)."""
import importlib
import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
# a path of the machine that ran a cell: a home, a checkout, a temporary folder, a virtual environment
MACHINE_PATH = re.compile(r"(?:/(?:home|root|work|Users|tmp|private/var)/[\w.-]+|site-packages|\.venv|[A-Z]:\\\\Users)")
RAW_WARNING = re.compile(r"\b\w*Warning: ")


@pytest.fixture(scope="module")
def pages(tmp_path_factory)->dict:
    "Run `nbdev.serve.proc_nbs` on a copy of the project, as `nbdev-docs` does before calling Quarto."
    proj = tmp_path_factory.mktemp("docs")
    for name in ("pyproject.toml", "nbs", "finetune_book"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, proj / name)
    res = subprocess.run([sys.executable, "-c", "from nbdev.serve import proc_nbs; proc_nbs(n_workers=1)"], cwd=proj,
                         capture_output=True, text=True, timeout=900, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Found cells containing imports and other code" not in res.stderr  # nbdev would run such a cell whole
    return {p.name: json.loads(p.read_text()) for p in sorted((proj / "_proc").glob("*.ipynb"))}


def outputs_text(cell:dict)->str:
    parts = []
    for o in cell.get("outputs", []):
        parts.append("".join(o.get("text", "")))
        for v in o.get("data", {}).values(): parts.append("".join(v) if isinstance(v, list) else str(v))
        parts += o.get("traceback", [])
    return "\n".join(parts)


def page_problems(name:str, nb:dict)->list:
    "What a reader of the page should not see: hidden cells, errors, the build machine's paths, raw warnings."
    out = []
    for c in nb["cells"]:
        where = f"{name} cell {c.get('id')}"
        if re.match(r"\s*#\|\s*hide\b", "".join(c["source"])): out.append(f"{where}: a hidden cell is on the page")
        if any(o.get("output_type") == "error" for o in c.get("outputs", [])): out.append(f"{where}: an error")
        text = outputs_text(c)
        if m := MACHINE_PATH.search(text): out.append(f"{where}: a build-machine path ({m.group(0)})")
        if m := RAW_WARNING.search(text): out.append(f"{where}: a raw warning ({m.group(0).strip()})")
    return out


def test_processed_pages_show_no_hidden_cells_errors_paths_or_warnings(pages):
    assert len(pages) >= 12  # every chapter and the index
    assert [p for name, nb in pages.items() for p in page_problems(name, nb)] == []


def test_every_exported_function_has_its_api_doc(pages):
    missing = []
    for name, nb in pages.items():
        m = re.search(r"#\|\s*default_exp\s+(\w+)", json.dumps(json.loads((ROOT / "nbs" / name).read_text())))
        if not m: continue
        mod = importlib.import_module(f"finetune_book.{m.group(1)}")
        documented = set(re.findall(r"show_doc\((\w+)", "\n".join("".join(c["source"]) for c in nb["cells"])))
        missing += [f"{name}: {n}" for n in mod.__all__
                    if (inspect.isfunction(getattr(mod, n)) or inspect.isclass(getattr(mod, n))) and n not in documented]
    assert missing == []


def test_the_page_checks_can_fail():
    planted = {"cells": [
        {"cell_type": "code", "id": "a", "source": "#| hide\nx = 1", "outputs": []},
        {"cell_type": "code", "id": "b", "source": "1/0", "outputs": [{"output_type": "error", "traceback": []}]},
        {"cell_type": "code", "id": "c", "source": "m", "outputs": [{"output_type": "execute_result", "data": {
            "text/plain": "ModelSource(location='/home/ana/.venv/lib/python3.11/site-packages/x')"}}]},
        {"cell_type": "code", "id": "d", "source": "w", "outputs": [{"output_type": "stream", "name": "stderr",
            "text": "modeling_utils.py:3312: FutureWarning: `x` is deprecated"}]}]}
    found = page_problems("planted.ipynb", planted)
    assert [p.split(": ", 1)[1].split(" (")[0] for p in found] == [
        "a hidden cell is on the page", "an error", "a build-machine path", "a raw warning"]
