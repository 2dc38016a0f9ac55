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
    r = cli("tour", "--profile", "test", "--chapters", "finetune", "--out", str(tmp_path))  # one chapter keeps it short
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


@pytest.fixture
def bad_files(tmp_path):
    import pandas as pd
    from finetune_book.data import example_table_path
    table = pd.read_csv(example_table_path())
    files = {"empty": b"", "header": b"review,rating\n", "binary": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
             "one_class": table.assign(rating="positive").to_csv(index=False).encode(),
             "nan_text": table.assign(review=table.review.where(table.index != 4)).to_csv(index=False).encode(),
             "few_rows": b"review,rating\ngreat,positive\nawful,negative\nfine,mixed\n"}
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name}.csv"
        paths[name].write_bytes(content)
    return paths


@pytest.mark.parametrize("name,message", [
    ("empty", "is empty"), ("header", "no rows"), ("binary", "binary"), ("one_class", "Only one class"),
    ("nan_text", "missing or not strings"), ("few_rows", "Too few rows per class"),
])
def test_audit_bad_files_give_one_line(bad_files, name, message, tmp_path):
    r = cli("audit", str(bad_files[name]), "--text", "review", "--label", "rating", "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0


def test_audit_missing_column_and_file(tmp_path):
    from finetune_book.data import example_table_path
    r = cli("audit", str(example_table_path()), "--text", "tweet", "--label", "rating")
    assert r.returncode == 1 and "Missing column" in r.stderr
    r = cli("audit", str(tmp_path / "nope.csv"), "--text", "a", "--label", "b")
    assert r.returncode == 1 and "no such file" in r.stderr


def test_audit_latin1_file_and_json_output(tmp_path):
    import pandas as pd
    from finetune_book.data import example_table_path
    table = pd.read_csv(example_table_path())
    table.loc[0, "review"] = "Café crème was lovely"
    path = tmp_path / "latin.csv"
    path.write_bytes(table.to_csv(index=False).encode("latin-1"))
    out = tmp_path / "audit"
    r = cli("audit", str(path), "--text", "review", "--label", "rating", "--out", str(out), "--folds", "3", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "not valid UTF-8" in r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["summary"]["rows"] == len(table)
    for issue in res["label_issues"]:
        assert set(issue) == {"row", "label", "suggested", "score"}
        assert table.rating.iloc[issue["row"]] == issue["label"]      # row is the 0-based data row of the file
    flagged = pd.read_csv(out / "flagged.csv")
    assert {"row", "issue", "text", "label"} <= set(flagged.columns)
    assert (out / "report.md").exists() and (out / "profile.png").stat().st_size > 1000


def test_tour_data_quality_entry(tmp_path):
    r = cli("tour", "--profile", "test", "--chapters", "data_quality", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    dq = json.loads((tmp_path / "results.json").read_text())["chapters"]["data_quality"]
    assert dq["bbc_precision"] >= 0.7 and dq["bbc_recall"] >= 0.7
    assert 0 <= dq["accuracy_raw"] <= 1 and 0 <= dq["accuracy_cleaned"] <= 1
    assert dq["label_issues"] > 0 and (tmp_path / "data_quality_clean.png").exists()


def test_tour_sparse_data_entry(tmp_path):
    r = cli("tour", "--profile", "test", "--chapters", "sparse_data", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    sd = json.loads((tmp_path / "results.json").read_text())["chapters"]["sparse_data"]
    assert sd["k"] == 2 and sd["seeds"] == 2
    assert sd["best_method"] in {"SetFit", "frozen probe", "prototypes"}
    assert 0 <= sd["best_wins"] <= sd["seeds"]
    assert 0 <= sd["finetune_accuracy"] <= 1 and (tmp_path / "sparse_data_k_shot.png").stat().st_size > 1000


def test_tour_compute_entry(tmp_path):
    r = cli("tour", "--profile", "test", "--chapters", "compute", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    c = json.loads((tmp_path / "results.json").read_text())["chapters"]["compute"]
    assert c["params_exact"] and c["memory_configs"] == 3
    assert c["max_error_pct"] <= 15
    assert 0 < c["lora_trainable_share"] < 0.1
    assert c["checkpointing_memory_ratio"] < 1 and c["grouped_speedup"] > 0
    assert (tmp_path / "compute_levers.png").stat().st_size > 1000



def test_tour_explainability_entry(tmp_path):
    r = cli("tour", "--profile", "test", "--chapters", "explainability", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    e = json.loads((tmp_path / "results.json").read_text())["chapters"]["explainability"]
    methods = ("integrated_gradients", "input_x_gradient", "leave_one_out", "attention", "random")
    assert e["texts"] == 12 and all(f"comprehensiveness_{m}" in e and f"sufficiency_{m}" in e for m in methods)
    assert e["ig_vs_random"] == pytest.approx(e["comprehensiveness_integrated_gradients"] / e["comprehensiveness_random"], rel=1e-2)
    assert "| explainability | comprehensiveness_random |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "explainability_aopc.png").stat().st_size > 1000


def test_tour_fairness_entry(tmp_path):
    r = cli("tour", "--profile", "test", "--chapters", "fairness", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    f = json.loads((tmp_path / "results.json").read_text())["chapters"]["fairness"]
    assert f["seeds"] == 2 and f["probes"] > 0
    assert 0 <= f["gap_cda"] <= 1 and 0 <= f["gap_untreated"] <= 1 and 0 <= f["accuracy_cda"] <= 1
    assert f["gap_cut"] <= 1 and (tmp_path / "fairness_gap.png").stat().st_size > 1000

def test_memory_json_last_line_is_the_estimate():
    r = cli("memory", "minilm", "--method", "lora", "--precision", "bf16", "--batch", "4", "--seq", "32", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    parts = ("weights", "gradients", "optimizer_states", "activations", "temporaries")
    assert res["total"] == sum(res[k] for k in parts)
    assert res["params"] > res["trainable"] > 0
    assert res["method"] == "lora" and res["precision"] == "bf16" and res["batch_size"] == 4


def test_memory_offline_hub_id_is_one_clear_line():
    r = cli("memory", "no-such-org/no-such-model")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "short name" in r.stderr


def test_tour_llm_entry(tmp_path):
    from finetune_book.llm import LLM_PLANS
    r = cli("tour", "--profile", "test", "--chapters", "llm", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    llm = json.loads((tmp_path / "results.json").read_text())["chapters"]["llm"]
    plan = LLM_PLANS["test"]
    assert llm["steps"] == plan.steps and llm["test_prompts"] == plan.n_test
    for k in ("zero_shot_accuracy", "tuned_accuracy", "zero_shot_format", "tuned_format"):
        assert 0 <= llm[k] <= 1, k
    assert 1 < llm["adapter_mb"] < 5                   # rank-8 attention adapters: a few MB, not the 540 MB model
    assert (tmp_path / "llm_loss.png").stat().st_size > 1000
