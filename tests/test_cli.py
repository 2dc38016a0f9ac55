"""The finetune-book console script: errors, tour and bench."""
import json
import subprocess
import sys

import pytest


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "finetune_book.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args,code,message", [
    ([], 2, "required"),
    (["dance"], 2, "invalid choice"),
    (["tour", "--profile", "laptop"], 2, "invalid choice"),
    (["tour", "--chapters", "nope"], 1, "Unknown chapter"),
    (["tour", "--seed", "-3"], 1, "--seed"),
    (["bench", "--rows", "5"], 1, "at least 16"),
    (["bench", "--rows", "many"], 2, "invalid int"),
])
def test_bad_arguments_give_one_line_and_nonzero_exit(args, code, message):
    r = cli(*args)
    assert r.returncode == code
    assert message in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0


def test_tour_writes_results_report_and_plots(tmp_path):
    r = cli("tour", "--profile", "test", "--chapters", "finetune", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["profile"] == "test"
    ft = results["chapters"]["finetune"]
    assert 0 <= ft["macro_f1"] <= 1 and 0 <= ft["baseline_macro_f1"] <= 1
    assert ft["train_rows"] == 320
    for plot in ft["plots"]:
        assert (tmp_path / plot).stat().st_size > 1000
    assert "| finetune | macro_f1 |" in (tmp_path / "report.md").read_text()
    assert "| finetune | accuracy |" in r.stdout


def test_bench_json_is_the_last_line():
    r = cli("bench", "--profile", "test", "--rows", "32", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("seed_samples_per_second", "book_samples_per_second", "seed_accuracy", "book_accuracy", "speedup"):
        assert key in res
    assert res["rows"] == 32
    assert res["speedup"] == pytest.approx(res["book_samples_per_second"] / res["seed_samples_per_second"])
