"""Shared set-up for the test suite: offline, `test` profile, one loaded tokenizer."""
import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"          # never reach for the hub during tests
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.pop("FINETUNE_BOOK_PROFILE", None)
os.environ["IN_TEST"] = "1"                 # the `test` profile, as under nbdev-test


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from finetune_book.core import load_tokenizer
    return load_tokenizer("minilm")


@pytest.fixture(scope="session")
def tweets():
    from finetune_book.data import load_tweets
    return load_tweets()


NOTEBOOK_BUDGET_S = 90  # each chapter's `test` run should fit in this; printed, not asserted (timings are noisy)
_notebook_seconds = {}
_notebook_cells = {}  # notebook -> {cell id: seconds} of its slower cells
_workers = set()  # notebooks run at a time (tests/test_notebooks.py)


def pytest_runtest_logreport(report):
    "Collect the notebook times that `test_notebooks` records with `record_property` (also under pytest-xdist's workers)."
    for name, value in getattr(report, "user_properties", ()):
        if name == "notebook_seconds": _notebook_seconds[value[0]] = value[1]; _workers.add(value[2])
        if name == "notebook_cells": _notebook_cells[value[0]] = value[1]


def pytest_terminal_summary(terminalreporter):
    if not _notebook_seconds: return
    tr = terminalreporter
    alone = _workers == {1}
    tr.section(f"notebooks under the test profile (budget {NOTEBOOK_BUDGET_S} s each, "
               + ("one at a time)" if alone else f"{max(_workers)} at a time, one torch thread each: "
                  "each time is longer than alone; the budget is read from a run with FINETUNE_BOOK_LIVE_TIMES set)"))
    for nb, s in sorted(_notebook_seconds.items(), key=lambda kv: -kv[1]):
        tr.write_line(f"{nb:<36} {s:6.0f} s" + ("   over budget" if alone and s > NOTEBOOK_BUDGET_S else ""))
    tr.write_line(f"{'sum of the times above':<36} {sum(_notebook_seconds.values()):6.0f} s")


def pytest_sessionfinish(session, exitstatus):
    "With `FINETUNE_BOOK_LIVE_TIMES=path`, record the notebooks' `test`-profile times for the workshop guide (chapter 11)."
    path = os.environ.get("FINETUNE_BOOK_LIVE_TIMES")
    if path and _notebook_seconds and _workers == {1}:
        from finetune_book.workshop import record_live_times
        record_live_times(_notebook_seconds, path, cells=_notebook_cells)
