"""The package's structure: one name per idea, dependencies that point back in the book, pages whose code runs."""
import ast
import builtins
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PKG, NBS = ROOT / "finetune_book", ROOT / "nbs"


def chapter_order()->dict:
    "Module name -> chapter number, read from each notebook's `default_exp`."
    order = {}
    for nb in sorted(NBS.glob("[0-9][0-9]_*.ipynb")):
        m = re.search(r"#\|\s*default_exp\s+(\w+)", nb.read_text())
        if m: order[m.group(1)] = int(nb.name[:2])
    return order


def module_trees()->dict:
    return {p.stem: ast.parse(p.read_text()) for p in sorted(PKG.glob("*.py")) if not p.name.startswith("_")}


def package_imports(tree)->list:
    "`(module, name)` for every `from finetune_book.x import name` / `from .x import name`, at any depth."
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            mod = node.module.removeprefix("finetune_book.").lstrip(".")
            if node.level or node.module.startswith("finetune_book."): out += [(mod, a.name) for a in node.names]
    return out


def exported(tree)->list:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return [e.value for e in node.value.elts]
    return []


def test_no_exported_name_in_two_modules():
    where = {}
    for mod, tree in module_trees().items():
        for name in exported(tree): where.setdefault(name, []).append(mod)
    assert {n: m for n, m in where.items() if len(m) > 1} == {}


def test_modules_import_only_earlier_chapters_and_no_private_helpers():
    order, problems = chapter_order(), []
    for mod, tree in module_trees().items():
        for dep, name in package_imports(tree):
            if dep in order and mod in order and order[dep] > order[mod]: problems.append(f"{mod} imports later {dep}")
            if name.startswith("_"): problems.append(f"{mod} imports private {dep}.{name}")
    assert problems == []


def test_the_structure_checks_can_fail():  # a planted backward import and a private import are caught
    tree = ast.parse("from finetune_book.llm import generate\nfrom .core import _load\n")
    assert package_imports(tree) == [("llm", "generate"), ("core", "_load")]
    assert chapter_order()["llm"] > chapter_order()["sparse"]


def _directives(src:str)->dict:
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^#\|\s*([\w-]+):?\s*(.*)$", src, re.M)}


def _names(nodes)->tuple:
    "Names `nodes` define and use (loads), walking into everything they contain."
    defined, used = set(), set()
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): defined.add(node.name)
        elif isinstance(node, ast.Name): (used if isinstance(node.ctx, ast.Load) else defined).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.arg): defined.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name: defined.add(node.name)
    return defined, used


def _defined_and_used(tree)->tuple:
    "`(defined, used now, used later)`: names in function and class bodies are looked up when called, not when defined."
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    rest = [n for n in tree.body if n not in defs]
    defined, used = _names(rest)
    inner_defined, later = _names(defs)
    return defined | {d.name for d in defs}, used, later - inner_defined


KERNEL_NAMES = {"display", "get_ipython", "In", "Out"}  # what IPython itself puts in a notebook's namespace


def unrunnable_names(nb:dict)->list:
    "`(cell index, names)` for visible code cells that use names no visible cell defines or imports (above, for top-level code)."
    visible, bad, deferred = set(), [], []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code": continue
        src = "".join(cell["source"])
        code = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("%", "!")))
        try: defined, used, later = _defined_and_used(ast.parse(code))
        except SyntaxError: continue
        d = _directives(src)
        if "hide" in d or d.get("echo") == "false": continue
        missing = sorted(n for n in used - defined - visible if not hasattr(builtins, n) and n not in KERNEL_NAMES)
        if missing: bad.append((i, missing))
        visible |= defined
        deferred.append((i, later - defined))
    for i, names in deferred:  # a function body may use what a later visible cell defines
        missing = sorted(n for n in names - visible if not hasattr(builtins, n) and n not in KERNEL_NAMES)
        if missing: bad.append((i, missing))
    return sorted(bad)


@pytest.mark.parametrize("nb", sorted(p.name for p in NBS.glob("*.ipynb")))
def test_visible_cells_run_by_themselves(nb):
    assert unrunnable_names(json.loads((NBS / nb).read_text())) == []


def test_unrunnable_names_finds_a_hidden_import():
    cell = lambda src: {"cell_type": "code", "source": [src]}
    nb = {"cells": [cell("#| hide\nimport numpy as np"), cell("x = np.zeros(3)"), cell("import numpy as np\ny = np.ones(2)"),
                    cell("z = pd.DataFrame()")]}
    assert unrunnable_names(nb) == [(1, ["np"]), (3, ["pd"])]  # imported only in a hidden cell; imported nowhere


def repeated_blocks(files:list, n:int=6)->list:
    "Runs of `n` identical non-trivial lines (stripped; blank, comment, import and `# %%` lines skipped) seen twice."
    seen, dupes = {}, []
    for f in files:
        lines = [(i + 1, l.strip()) for i, l in enumerate(Path(f).read_text().splitlines())]
        lines = [(i, l) for i, l in lines if l and not l.startswith(("#", "import ", "from ")) and len(l) > 3]
        for k in range(len(lines) - n + 1):
            key = tuple(l for _, l in lines[k:k + n])
            where = (Path(f).name, lines[k][0])
            if key in seen and seen[key][0] != where[0] or key in seen and abs(seen[key][1] - where[1]) >= n:
                dupes.append((seen[key], where))
            seen.setdefault(key, where)
    return dupes


def test_no_block_of_six_lines_written_twice():
    files = [p for p in sorted(PKG.glob("*.py")) if p.name != "_modidx.py"]
    assert repeated_blocks(files) == []


def test_repeated_blocks_can_fail(tmp_path):
    body = "".join(f"    x{i} = compute({i})\n" for i in range(6))
    (tmp_path / "a.py").write_text("def f():\n" + body); (tmp_path / "b.py").write_text("def g():\n" + body)
    assert len(repeated_blocks([tmp_path / "a.py", tmp_path / "b.py"])) == 1


def bf16_capability_calls(tree)->list:
    "Line numbers where code calls `is_bf16_supported` (comments and strings do not count)."
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "attr", getattr(n.func, "id", None)) == "is_bf16_supported"]


def test_no_code_path_chooses_bf16_from_is_bf16_supported():
    "It is True on a T4, where bf16 is emulated: precision comes from `core.training_precision` (compute capability)."
    assert {m: lines for m, t in module_trees().items() if (lines := bf16_capability_calls(t))} == {}
    planted = ast.parse("bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()")
    assert bf16_capability_calls(planted) == [1]


def crowded_export_cells(nb:dict)->list:
    "`(cell id, names)` of the export cells that define two or more public functions, or two or more public classes."
    out = []
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] != "code" or not re.match(r"#\|\s*export\b", src): continue
        body = ast.parse("\n".join(l for l in src.splitlines() if not l.startswith("#|"))).body
        public = lambda kind: [n.name for n in body if isinstance(n, kind) and not n.name.startswith("_")]
        functions, classes = public((ast.FunctionDef, ast.AsyncFunctionDef)), public(ast.ClassDef)
        if len(functions) > 1 or len(classes) > 1: out.append((cell.get("id"), sorted(functions + classes)))
    return out


# A type and the one function that returns or looks it up (a Plan and its `*_plan`) count as one idea.
@pytest.mark.parametrize("nb", sorted(p.name for p in NBS.glob("*.ipynb")))
def test_one_public_function_per_export_cell(nb):
    found = crowded_export_cells(json.loads((NBS / nb).read_text()))
    assert not found, f"split these export cells, one public function (or class) each, with a sentence and a use: {found}"


def test_crowded_export_cells_can_fail():
    cell = lambda cid, src: {"cell_type": "code", "id": cid, "source": [src]}
    nb = {"cells": [cell("a", "#| export\ndef f(): pass\ndef _g(): pass"), cell("b", "#| export\nclass P: pass\ndef p(): pass"),
                    cell("c", "#| export\ndef f(): pass\ndef h(): pass"), cell("d", "def x(): pass\ndef y(): pass"),
                    cell("e", "#| export\nclass A: pass\nclass B: pass")]}
    assert crowded_export_cells(nb) == [("c", ["f", "h"]), ("e", ["A", "B"])]
