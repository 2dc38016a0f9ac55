"""Every chapter notebook runs top to bottom under the `test` profile (nbdev-test).

The notebooks run two at a time, each with one torch thread, longest first: loading, tokenizing and Python's own
work are single-threaded, so on a 2-core machine two notebooks finish sooner than one after the other. The time each took is
printed in a table at the end of the run (conftest); the 90-second budget is checked by reading it, not asserted,
since a timed test is flaky on a shared machine. With `FINETUNE_BOOK_LIVE_TIMES=path` the notebooks run one at a
time with the machine's threads, as a learner runs them, and those times are recorded for the workshop guide."""
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

NBS = Path(__file__).parents[1] / "nbs"
NOTEBOOKS = sorted(p.name for p in NBS.glob("*.ipynb"))
CELL_TIMING_MIN = 1.0  # seconds; the workshop guide cuts a long chapter's live run at a section from these (chapter 11)
WORKERS = 1 if os.environ.get("FINETUNE_BOOK_LIVE_TIMES") else int(os.environ.get("FINETUNE_BOOK_TEST_WORKERS", "2"))


def run_notebook(nb:str)->tuple:
    "`(completed process, seconds)` of one notebook's `nbdev-test` run under the `test` profile."
    env = {**os.environ, "IN_TEST": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("FINETUNE_BOOK_PROFILE", None)
    if WORKERS > 1: env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # two notebooks share the cores
    start = time.perf_counter()
    r = subprocess.run([str(Path(sys.executable).parent / "nbdev-test"), str(NBS / nb), "--cell-timing-min", str(CELL_TIMING_MIN)],
                       capture_output=True, text=True, env=env, cwd=NBS.parent, timeout=900)
    return r, time.perf_counter() - start


def cell_seconds(nb:str, output:str)->dict:
    "`{cell id: seconds}` of the cells `nbdev-test --cell-timing-min` reported for `nb`."
    return {m.group(1): float(m.group(2)) for m in re.finditer(rf"^{re.escape(nb)}:(\S+): ([\d.]+)s$", output, flags=re.M)}


def longest_first(notebooks:list)->list:
    "The notebooks in the order that packs best: the longest recorded live time first."
    from finetune_book.workshop import live_times
    path = NBS.parent / "workshop" / "live_times.json"
    recorded = live_times(path) if path.exists() else {}
    return sorted(notebooks, key=lambda nb: -recorded.get(nb, 0))


@pytest.fixture(scope="module")
def notebook_runs(request):
    "Every selected notebook queued at once on a pool of `WORKERS`; each test waits for its own."
    chosen = [i.callspec.params["nb"] for i in request.session.items if i.originalname == "test_notebook_runs_under_test_profile"]
    with ThreadPoolExecutor(WORKERS) as pool:
        runs = {nb: pool.submit(run_notebook, nb) for nb in longest_first(chosen)}
        yield runs
        for f in runs.values(): f.cancel()  # after a Ctrl-C or a failed collection: start no more


@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_notebook_runs_under_test_profile(nb, notebook_runs, record_property):
    r, seconds = notebook_runs[nb].result()
    record_property("notebook_seconds", (nb, seconds, WORKERS))  # conftest prints the table
    record_property("notebook_cells", (nb, cell_seconds(nb, r.stdout + r.stderr)))
    assert r.returncode == 0 and "Success" in r.stdout + r.stderr, (r.stdout + r.stderr)[-4000:]


def test_the_slower_cells_are_read_from_nbdev_test():
    out = "05_compute.ipynb:4f32045a: 70.986s\n05_compute.ipynb:ex4: 18.290s\n06_x.ipynb:zz: 9.0s\nSuccess.\n"
    assert cell_seconds("05_compute.ipynb", out) == {"4f32045a": 70.986, "ex4": 18.29}


def test_notebooks_are_run_longest_first():
    assert longest_first(["a.ipynb", "05_compute.ipynb", "01_data.ipynb"])[:2] == ["05_compute.ipynb", "01_data.ipynb"]
