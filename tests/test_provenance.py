"""The book's evidence: every stamped notebook's outputs come from its current code, and its prose quotes them.

What counts as code that can change an output is decided in `finetune_book.provenance.output_code` (every code
cell but environment cells and `#| eval: false` cells); what counts as a number the prose claims, in
`prose_numbers`. Notebooks are stamped with `finetune-book build NOTEBOOK --profile cpu`."""
import copy
import json
import re
import shutil
from pathlib import Path

import pytest

from finetune_book.provenance import (build_notebook, check_notebook, code_hash, output_numbers, read_stamp,
                                      unshown_numbers)

ROOT = Path(__file__).parents[1]
NBS, PKG = ROOT / "nbs", ROOT / "finetune_book"

# Chapters whose outputs predate the stamp: the chapter issues re-execute and stamp them. The test fails when one
# of them is stamped and still listed (shrink the list), and when any notebook not listed here has no stamp.
# Issue 16 changed code in all of them (shared helpers, renames, visible set-up cells, tour entries) without
# re-running them; their behaviour is unchanged and checked by the tests, except 08's sizes on disk: `save_adapter`
# and the merged model now count the safetensors only (the committed 3.72 / 541.61 MB include config and tokenizer files).
AWAITING_STAMP = {}


def stale_report(nbs_dir, package_dir=PKG, awaiting=AWAITING_STAMP):
    "Problems that fail the test (stale or missing stamps) and notes that do not (modules changed since)."
    problems, notes = [], []
    for path in sorted(Path(nbs_dir).glob("*.ipynb")):
        c = check_notebook(path, package_dir)
        if c.status == "stale":
            problems.append(f"{c.notebook}: code changed since its outputs were made (stamp {c.stamp['code']}, "
                            f"now {code_hash(json.loads(path.read_text()))}); run: finetune-book build nbs/{c.notebook}")
        elif c.status == "current" and c.stamp["profile"] == "test":
            problems.append(f"{c.notebook}: its outputs come from the test profile; run: finetune-book build nbs/{c.notebook} --profile cpu")
        elif c.status == "unstamped" and c.notebook not in awaiting:
            problems.append(f"{c.notebook}: not stamped; run: finetune-book build nbs/{c.notebook} --profile cpu")
        elif c.status != "unstamped" and c.notebook in awaiting:
            problems.append(f"{c.notebook} is stamped now: remove it from AWAITING_STAMP")
        if c.status == "unstamped" and c.notebook in awaiting:
            notes.append(f"{c.notebook}: not yet stamped ({awaiting[c.notebook]} re-executes it)")
        if c.changed_modules:
            notes.append(f"{c.notebook}: imported modules changed since it ran: {', '.join(c.changed_modules)}")
    return problems, notes


def test_every_stamped_notebook_is_current():
    problems, notes = stale_report(NBS)
    print("\n".join(notes))
    assert not problems, "\n".join(problems)


@pytest.fixture
def stamped_copy(tmp_path):
    "A copy of the stamped core chapter in a folder of its own."
    shutil.copy(NBS / "00_core.ipynb", tmp_path / "00_core.ipynb")
    assert check_notebook(tmp_path / "00_core.ipynb", PKG).status == "current"
    return tmp_path / "00_core.ipynb"


def _edit(path, fn):
    nb = json.loads(path.read_text())
    fn(nb)
    path.write_text(json.dumps(nb))


def test_stale_check_fails_on_an_edited_code_cell(stamped_copy):
    def edit(nb):
        c = next(c for c in nb["cells"] if "def set_seed" in "".join(c["source"]))
        c["source"] = "".join(c["source"]).replace("seed < 0", "seed < 1")
    _edit(stamped_copy, edit)
    problems, _ = stale_report(stamped_copy.parent, awaiting={})
    assert len(problems) == 1 and "00_core.ipynb: code changed" in problems[0], problems


def test_stale_check_ignores_prose_and_the_colab_cell(stamped_copy):
    def edit(nb):
        for c in nb["cells"]:
            src = "".join(c["source"])
            if c["cell_type"] == "markdown" and "provenance-stamp" != c.get("id"): c["source"] = src + " More prose."
            if "google.colab" in src: c["source"] = src.replace("-q", "-q --upgrade")
    _edit(stamped_copy, edit)
    assert stale_report(stamped_copy.parent, awaiting={})[0] == []


def test_unstamped_notebooks_fail_unless_awaiting(stamped_copy):
    _edit(stamped_copy, lambda nb: nb["cells"].__setitem__(slice(None), [c for c in nb["cells"] if c.get("id") != "provenance-stamp"]))
    assert "not stamped" in stale_report(stamped_copy.parent, awaiting={})[0][0]
    problems, notes = stale_report(stamped_copy.parent, awaiting={"00_core.ipynb": "issue X"})
    assert problems == [] and "issue X" in notes[0]


def test_a_page_built_under_the_test_profile_fails(stamped_copy):
    def edit(nb):
        c = next(c for c in nb["cells"] if c.get("id") == "provenance-stamp")
        c["source"] = "".join(c["source"]).replace('"profile": "cpu"', '"profile": "test"')
    _edit(stamped_copy, edit)
    assert "test profile" in stale_report(stamped_copy.parent, awaiting={})[0][0]


def test_changed_module_is_listed_not_failed(tmp_path):
    shutil.copy(NBS / "01_data.ipynb", tmp_path / "01_data.ipynb")
    def edit(nb):
        c = next(c for c in nb["cells"] if c.get("id") == "provenance-stamp")
        stamp = read_stamp(nb)
        old = json.dumps(stamp, sort_keys=True).replace("--", "-\\u002d")
        stamp["modules"]["core"] = "0" * 16
        c["source"] = "".join(c["source"]).replace(old, json.dumps(stamp, sort_keys=True).replace("--", "-\\u002d"))
    _edit(tmp_path / "01_data.ipynb", edit)
    problems, notes = stale_report(tmp_path, awaiting={})
    assert problems == [] and notes == ["01_data.ipynb: imported modules changed since it ran: core"]


def test_build_executes_under_the_profile_and_stamps(tmp_path):
    nbs = tmp_path / "nbs"; nbs.mkdir()
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    nb = {"cells": [
        {"cell_type": "markdown", "id": "t", "metadata": {}, "source": "# Tiny\n\n> A notebook to build."},
        {"cell_type": "code", "id": "a", "metadata": {}, "execution_count": None, "outputs": [],
         "source": "from finetune_book.core import get_profile\nprint(get_profile().name)\nprint('bar  10%\\rbar 100%')"}],
        "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5}
    (nbs / "tiny.ipynb").write_text(json.dumps(nb))
    stamp = build_notebook(nbs / "tiny.ipynb", profile="test", log=lambda m: None)
    built = json.loads((nbs / "tiny.ipynb").read_text())
    text = "".join(o["text"] if isinstance(o["text"], str) else "".join(o["text"])
                   for c in built["cells"] for o in c.get("outputs", []))
    assert text == "test\nbar 100%\n"                     # ran under the profile asked for; the bar collapsed
    assert (stamp["profile"], stamp["code"], stamp["modules"].keys() >= {"core"}) == ("test", code_hash(built), True)
    assert read_stamp(built) == stamp and built["cells"][1]["id"] == "provenance-stamp"
    assert check_notebook(nbs / "tiny.ipynb", PKG).status == "current"
    bad = copy.deepcopy(built); bad["cells"][-1]["source"] = "raise ValueError('planted')"
    (nbs / "bad.ipynb").write_text(json.dumps(bad))
    with pytest.raises(RuntimeError, match="bad.ipynb did not run to the end: ValueError: planted"):
        build_notebook(nbs / "bad.ipynb", profile="test", log=lambda m: None)
    assert read_stamp(json.loads((nbs / "bad.ipynb").read_text()))["code"] == stamp["code"]  # nothing written


def _all_output_numbers():
    return [v for p in sorted(NBS.glob("*.ipynb")) for v in output_numbers(json.loads(p.read_text()))]


@pytest.mark.parametrize("nb", sorted(p.name for p in NBS.glob("*.ipynb")))
def test_prose_numbers_are_shown_by_outputs(nb):
    if nb in AWAITING_STAMP: pytest.skip(f"not stamped yet ({AWAITING_STAMP[nb]})")
    page = json.loads((NBS / nb).read_text())
    values = _all_output_numbers() if nb == "index.ipynb" else None  # the index summarises every chapter
    assert unshown_numbers(page, values) == [], "numbers in the prose that no output shows (cell id, number)"


def test_no_page_lands_with_placeholder_prose():
    "A chapter's Summary and result paragraphs are written from its outputs; a placeholder for them must not land."
    hits = [p.name for p in sorted(NBS.glob("*.ipynb")) if "(written after the run" in p.read_text()]
    assert not hits, f"placeholder prose in {hits}: write it from the outputs above it"


FRAME = ("After this chapter you can", "**Needs**", "**Run time**", "## Summary", "## Exercises", "## Questions", "<details>")


@pytest.mark.parametrize("nb", sorted(p.name for p in NBS.glob("0[2-8]_*.ipynb")))
def test_every_chapter_has_its_teaching_frame(nb):
    "Issues 19 and 20: objectives, prerequisites and run time at the top; Summary, Exercises, Questions with answers at the end."
    if nb in AWAITING_STAMP: pytest.skip(f"not rewritten yet ({AWAITING_STAMP[nb]})")
    md = "\n".join("".join(c["source"]) for c in json.loads((NBS / nb).read_text())["cells"] if c["cell_type"] == "markdown")
    missing = [k for k in FRAME if k not in md]
    assert not missing, f"{nb} lacks {missing}"
    assert md.index("After this chapter you can") < md.index("## Summary") < md.index("## Exercises") < md.index("## Questions")
    questions = md[md.index("## Questions"):]
    asked = len(re.findall(r"^\d+\. ", questions, flags=re.M))
    assert asked >= 3 and questions.count("<details>") >= asked, (nb, asked, questions.count("<details>"))  # each one answered
