"""The workshop kit: every chapter's quiz is consistent (issue 21)."""
import functools
import json
import re
from pathlib import Path

import pytest

NBS = Path(__file__).resolve().parent.parent / "nbs"
CHAPTERS = sorted(p.name for p in NBS.glob("0[2-8]_*.ipynb"))


def markdown(nb:str)->str:
    return "\n".join("".join(c["source"]) for c in json.loads((NBS / nb).read_text())["cells"] if c["cell_type"] == "markdown")


def quiz(md:str)->list:
    "A chapter's quiz as `[(question, {letter: choice}, right letter, explanation)]`; the section ends at `## Questions`."
    block = md[md.index("## Quiz"):]
    block = block[:block.index("## Questions")] if "## Questions" in block else block
    out = []
    for item in re.split(r"^\d+\. ", block, flags=re.M)[1:]:
        choices = dict(re.findall(r"^\s*- \(([a-e])\) (.+)$", item, flags=re.M))
        folded = re.search(r"<details><summary>Answer</summary>(.*?)</details>", item, flags=re.S)
        explanation = folded.group(1) if folded else ""
        right = re.findall(r"\*\*\(([a-e])\)\*\*", explanation)
        out.append((item.splitlines()[0], choices, right, explanation))
    return out


def problems(md:str)->list:
    "What makes a quiz inconsistent: too few or many questions, not one right answer, a choice left unexplained."
    if "## Quiz" not in md: return ["no quiz"]
    items, found = quiz(md), []
    if not 3 <= len(items) <= 5: found.append(f"{len(items)} questions (3 to 5 wanted)")
    for q, choices, right, explanation in items:
        letters = sorted(choices)
        if len(letters) < 3 or letters != [chr(ord("a") + i) for i in range(len(letters))]:
            found.append(f"{q[:40]!r}: choices {letters}")
        if len(right) != 1 or right[0] not in choices: found.append(f"{q[:40]!r}: right answers {right}")
        rest = explanation.replace(f"**({right[0]})**", "", 1) if len(right) == 1 else explanation
        unexplained = [l for l in letters if f"({l})" not in rest]
        if unexplained: found.append(f"{q[:40]!r}: choices {unexplained} not explained")
    return found


@pytest.mark.parametrize("nb", CHAPTERS)
def test_every_chapter_has_a_consistent_quiz(nb):
    assert problems(markdown(nb)) == []


def test_the_quiz_check_catches_what_it_should():
    good = ("## Quiz\n\n1. Q?\n   - (a) x\n   - (b) y\n   - (c) z\n   <details><summary>Answer</summary>**(b)**. (a) no. "
            "(b) yes. (c) no.</details>\n2. R?\n   - (a) x\n   - (b) y\n   - (c) z\n   <details><summary>Answer</summary>"
            "**(a)**. (a) yes. (b) no. (c) no.</details>\n3. S?\n   - (a) x\n   - (b) y\n   - (c) z\n   <details><summary>"
            "Answer</summary>**(c)**. (a) no. (b) no. (c) yes.</details>\n\n## Questions\n\n1. Not a quiz item.\n")
    assert problems(good) == []
    assert any("right answers" in p for p in problems(good.replace("**(a)**", "**(a)** **(b)**")))  # two right answers
    assert any("not explained" in p for p in problems(good.replace("(c) yes.", "yes.")))          # a choice unexplained
    assert any("questions" in p for p in problems(good.split("3. S?")[0] + "\n## Questions"))     # only two questions
    assert any("choices" in p for p in problems(good.replace("   - (c) z\n", "", 1)))               # two choices only
    assert problems("# no quiz here") == ["no quiz"]


def test_the_guide_shows_the_agenda_of_the_current_stamps_and_live_times():
    "The guide's committed agenda is what the chapters' stamps and the measured live times give today (issue 21)."
    import contextlib, io
    from finetune_book.workshop import agenda, chapter_times, live_parts
    guide = json.loads((NBS / "11_workshop.ipynb").read_text())
    cell = next(c for c in guide["cells"] if c.get("id") == "w-agenda-use")
    shown = "".join("".join(o["text"]) for o in cell["outputs"] if o["output_type"] == "stream")
    day = agenda(chapter_times(NBS), live_parts(NBS, NBS.parent / "workshop" / "live_times.json"))
    printing = "".join(l for l in cell["source"] if not l.startswith(("parts =", "day =")))  # what the cell shows of `day`
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(printing, "agenda", "exec"), {"day": day, "print": print})
    assert shown == out.getvalue(), "re-run the guide: finetune-book build nbs/11_workshop.ipynb"
    assert day.end.iloc[-1] <= "17:00"


# --- student copies and the exercise checks -------------------------------------------------------------------

def solution_cells(nb:dict)->list:
    "The exercise solutions of a chapter: the folded code cells after its Exercises heading."
    out, inside = [], False
    for c in nb["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown" and "## Exercises" in src: inside = True
        elif c["cell_type"] == "markdown" and re.search(r"^## (Quiz|Questions)", src, re.M): inside = False
        elif inside and c["cell_type"] == "code" and "#| code-fold" in src: out.append(src)
    return out


def chapter_env(exercise:str)->dict:
    "The namespace a chapter's solution runs in: its module's names and what the chapter's import-only cells import."
    import ast, importlib
    nb = json.loads(next(NBS.glob(f"{exercise[:2]}_*.ipynb")).read_text())
    module = re.search(r"#\|\s*default_exp\s+(\w+)", json.dumps(nb)).group(1)
    env = {**vars(importlib.import_module("finetune_book.data")), **vars(importlib.import_module(f"finetune_book.{module}"))}
    for c in nb["cells"]:
        src = "\n".join(l for l in "".join(c["source"]).splitlines() if not l.startswith("#|"))
        if c["cell_type"] == "code" and src.strip():
            tree = ast.parse(src)
            if all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body) and not any(
                    isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body):
                exec(compile(tree, exercise, "exec"), env)
    return env


def defines(node)->set:
    "The names a statement of a solution cell defines: a function's, or its assignments' targets (in a `with` too; not a comprehension's)."
    import ast
    if isinstance(node, ast.FunctionDef): return {node.name}
    targets = [t for n in ast.walk(node) if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign))
               for t in (n.targets if isinstance(n, ast.Assign) else [n.target])]
    return {x.id for t in targets for x in ast.walk(t) if isinstance(x, ast.Name)}


def needed_nodes(body:list, name:str)->list:
    "The statements of a solution cell that define `name`, with the earlier ones whose names it reads (e.g. `_f, _l = ...`)."
    import ast
    i = next(i for i, node in enumerate(body) if name in defines(node))
    wanted, keep = {n.id for n in ast.walk(body[i]) if isinstance(n, ast.Name)}, [body[i]]
    for node in reversed(body[:i]):
        if defines(node) & wanted:
            keep.insert(0, node); wanted |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    return keep


def reference_answer(exercise:str, name:str, **context):
    "The chapter's own solution for `name`, executed from its solution cell in the chapter module's namespace (and `context`)."
    import ast
    nb, env = json.loads(next(NBS.glob(f"{exercise[:2]}_*.ipynb")).read_text()), {**chapter_env(exercise), **context}
    for src in solution_cells(nb):
        tree = ast.parse("\n".join(l for l in src.splitlines() if not l.startswith("#|")))
        if any(name in defines(node) for node in tree.body):
            exec(compile(ast.Module(needed_nodes(tree.body, name), []), exercise, "exec"), env)
            return env[name]
    raise LookupError(f"{name} is not in chapter {exercise[:2]}'s solutions")


def test_a_solution_runs_with_the_lines_it_reads_and_no_other():
    import ast
    body = ast.parse("a = 1\n_x = 2\nb = expensive()\nwith ctx(): _y = _x + 1\nc = [i for i in b]\nex = _y * a + sum(i for i in a)").body
    assert [ast.unparse(n) for n in needed_nodes(body, "ex")] == ["a = 1", "_x = 2", "with ctx():\n    _y = _x + 1", "ex = _y * a + sum((i for i in a))"]


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    from finetune_book.workshop import write_student_copies
    out = tmp_path_factory.mktemp("students")
    return {p.name: json.loads(p.read_text()) for p in write_student_copies(NBS, out)}


def test_a_student_copy_of_every_chapter_holds_no_solution_and_no_answer(copies):
    assert sorted(copies) == CHAPTERS
    for nb, copy in copies.items():
        original = json.loads((NBS / nb).read_text())
        code = "\n".join("".join(c["source"]) for c in copy["cells"] if c["cell_type"] == "code")
        text = "\n".join("".join(c["source"]) for c in copy["cells"])
        solutions = solution_cells(original)
        elsewhere = "\n".join("".join(c["source"]) for c in original["cells"] if c["cell_type"] == "code" and "".join(c["source"]) not in solutions)
        for src in solutions:  # every line that computes an answer is gone (signatures and docstrings stay)
            body = [l.strip() for l in src.splitlines() if l.strip() and not l.startswith(("#|", "def ")) and not l.strip().startswith('"')]
            assert not [l for l in body if len(l) > 12 and l in code and l not in elsewhere], nb
        assert "finetune-book:stamp" not in text and "Exercise 4's answer" not in text and "Exercise 2's answer" not in text
        questions = text[text.index("## Questions"):]
        assert "<details>" not in questions and "1. " in questions  # the questions stay, their answers go
        assert "<details>" in text[text.index("## Quiz"):text.index("## Questions")]  # the quiz keeps its explanations
        assert all(not c.get("outputs") for c in copy["cells"] if c["cell_type"] == "code")
        assert json.loads((NBS / nb).read_text()) == original  # the book's notebook is untouched


@pytest.mark.parametrize("exercise", ["02.4", "03.4", "04.4", "05.4", "06.4", "07.4", "08.3"])
def test_each_checked_exercise_passes_its_reference_and_fails_its_stub(exercise, copies):
    from finetune_book.workshop import EXERCISE_CHECKS, check_exercise
    name = EXERCISE_CHECKS[exercise][0]
    copy = copies[next(n for n in CHAPTERS if n.startswith(exercise[:2]))]
    cells = ["".join(c["source"]) for c in copy["cells"] if c["cell_type"] == "code"]
    call = f'check_exercise("{exercise}", {name})'
    assert call in cells and "from finetune_book.workshop import check_exercise" in cells  # the checker is in the copy
    stub = next(c for c in reversed(cells[:cells.index(call)]) if not c.startswith("check_exercise("))  # after the stub: its checks
    assert stub.startswith("# Exercise: replace the stubs")
    env = chapter_env(exercise)
    exec(compile("\n".join(l for l in stub.splitlines() if not re.match(r"\w+ = \.\.\.", l) or l.startswith(name)), "stub", "exec"), env)
    assert check_exercise(exercise, env[name], quiet=True) is False  # the stub fails
    assert check_exercise(exercise, reference_answer(exercise, name), quiet=True) is True  # the book's solution passes


def test_the_checks_fail_plausible_wrong_answers_with_a_hint_and_no_answer(capsys):
    from finetune_book.compute import Lever
    from finetune_book.workshop import check_exercise
    assert not check_exercise("08.3", lambda a: a.strip().lower().rstrip(".") in ("negative", "neutral", "positive") or "," in a)
    assert not check_exercise("05.4", Lever(group_by_length=True, accumulation=4))
    assert not check_exercise("03.4", lambda p, g: p[range(len(p)), g] - p.max(1))
    assert not check_exercise("06.4", lambda a: __import__("pandas").DataFrame({"word": a.tokens, "score": a.scores}))
    out = capsys.readouterr().out
    assert out.count("not yet:") == 4 and "micro-batches" in out and "given class itself" in out
    with pytest.raises(ValueError, match="no check for exercise"): check_exercise("99.1", None)


def test_student_copy_refuses_what_is_not_a_chapter():
    from finetune_book.workshop import student_copy, write_student_copies
    nb = json.loads((NBS / CHAPTERS[0]).read_text())
    with pytest.raises(ValueError, match="two digits"): student_copy(nb, "6")
    with pytest.raises(ValueError, match="parsed JSON"): student_copy("02_finetune.ipynb", "02")
    with pytest.raises(FileNotFoundError, match="no chapter notebooks"): write_student_copies(NBS / "images", "/tmp/none")


@functools.cache
def value_contexts():
    """Small stand-ins for the chapters' tables that value answers are checked against, a plausible wrong answer each (or a function
    of the right one and the stand-ins) and the hint it must get."""
    import types
    import numpy as np, pandas as pd
    from finetune_book.core import load_tokenizer
    from finetune_book.data import load_tweets, padding_share
    from finetune_book.core import load_classifier
    from finetune_book.data import TWEET_LABELS
    from finetune_book.core import load_chat_model
    from finetune_book.data import BBC_LABELS, load_bbc, sample_rows
    from finetune_book.data_quality import AuditReport, find_label_issues, inject_label_noise, precision_recall
    from finetune_book.explain import attribute
    from finetune_book.fairness import counterfactual_table
    conflicts = pd.DataFrame({"group": [0, 0, 1, 1, 2, 2, 2, 3, 3],
                              "label": ["negative", "neutral", "negative", "positive", "neutral", "positive", "neutral", "negative", "positive"]})
    conflicts["labels_in_group"] = conflicts.groupby("group").label.transform(lambda l: ", ".join(sorted(set(l))))
    tweets = load_tweets().head(600)
    run = types.SimpleNamespace(tokenizer=load_tokenizer("minilm"))
    at_16 = lambda right, data, run: {s: round(padding_share([len(i) for i in run.tokenizer(data["train"]["text"].tolist(), truncation=True,
                                                             max_length=128)["input_ids"]], 16, s), 3) for s in right}
    rng = np.random.default_rng(0)  # a BBC curve: prototypes best at k=2, SetFit best at k=8, SetFit ahead of fine-tuning on 2 of 3 seeds at k=2
    curve = pd.DataFrame([dict(method=m, k=k, seed=s, accuracy=base + 0.01 * rng.random())
                          for k, means in ((2, {"full fine-tuning": 0.40, "SetFit": 0.42, "prototypes": 0.60}),
                                           (8, {"full fine-tuning": 0.70, "SetFit": 0.90, "prototypes": 0.65}))
                          for m, base in means.items() for s in range(3)])
    curve.loc[(curve.k == 2) & (curve.method == "SetFit") & (curve.seed == 0), "accuracy"] = 0.30
    report = lambda trainable, total, weights: types.SimpleNamespace(trainable=trainable, total=total, weights=weights, activations=total - weights)
    big = {"1B decoder, full, b4 x 1024": report(1_235_814_400, 40e9, 5e9), "1B decoder, LoRA, b4 x 1024": report(5_636_096, 22e9, 5e9)}
    names = ["seed recipe: pad to max_length", "dynamic padding", "dynamic + length grouping", "+ gradient accumulation (4 x 4)",
             "+ gradient checkpointing", "+ bf16 autocast", "+ LoRA"]
    lever_table = pd.DataFrame({"peak_mb": [900, 700, 600, 320, 330, 560, 430], "seconds_per_step": [2.0, 0.6, 0.5, 0.65, 0.7, 0.3, 0.28]},
                               index=names)
    tcav = pd.DataFrame({"concept": ["thanks", "thanks", "delay", "delay"], "label": ["positive", "negative", "positive", "negative"],
                         "layer": [4, 4, 3, 6], "p_value": [0.001, 0.02, 0.004, 0.3], "p_holm": [0.004, 0.06, 0.012, 1.0],
                         "degenerate": [False, False, True, True]})
    tcav["verdict"] = np.where(tcav.p_holm >= 0.05, "no evidence", "raises")
    train_df = tweets[["text", "label"]].head(800)
    report = AuditReport(summary={"rows": 10, "near_duplicates": 2}, label_issues=pd.DataFrame({"row": [2, 7], "suggested": ["positive"] * 2}),
                         flagged=pd.DataFrame({"row": [1, 2, 2, 5, 7], "issue": ["near_duplicate", "near_duplicate", "label_issue",
                                                                                  "duplicate", "label_issue"]}))  # rows 1, 2 near-duplicates
    classifier, classifier_tok = load_classifier("minilm", labels=TWEET_LABELS)  # pretrained, its head untrained: the check reruns it
    lowest = lambda right, model, tokenizer: (attribute(model, tokenizer, "@JetBlue thanks for the great flight", method="leave_one_out")
                                              .top(99).token.iloc[-1], *right[1:])
    bbc = sample_rows(load_bbc(), 100, seed=0)
    bbc_features = np.random.default_rng(0).normal(size=(len(bbc), 8))  # any features will do: the check reruns the detector on them
    at_10 = lambda right, bbc, bbc_features: precision_recall(
        find_label_issues(bbc.text, inject_label_noise(bbc.label, 0.10, seed=0)[0], features=bbc_features).row,
        np.flatnonzero(inject_label_noise(bbc.label, 0.10, seed=0)[1]))
    llm, llm_tok = load_chat_model("smollm2-135m")
    few_articles = types.SimpleNamespace(n_articles=3)  # the chapter's plan, as far as these checks read it
    return {"02.1": ({"data": {"train": tweets}, "run": run}, at_16, "batch size 64"),
            "02.2": ({"run": run}, lambda right, run: 100 * right, "not percent"),
            "02.3": ({}, lambda right: right.assign(**{c: 2 * right[c] for c in right.filter(like="p_")}), "sum to 1"),
            "03.2": ({"bbc": bbc, "bbc_features": bbc_features}, at_10, "not the 10%"),
            "03.1": ({"conflicts": conflicts}, 3, "counts tweets"),              # 3 neutral rows in 2 groups
            "03.3": ({"sample": tweets.head(10), "report": report}, 3, "default cleaning"),  # rows 2, 5, 7: the default issues
            "04.1": ({"pool_tweets": tweets[["text", "label"]]}, lambda right, **_: not right, "index labels"),
            "04.2": ({"pairs": pd.DataFrame({"kept": [True, False, False, False, True],
                                             "reason": ["ok", "drifted", "copy", "drifted", "ok"]})}, (0.4, "drifted"), "share kept"),
            "04.3": ({"curves": {"bbc": curve}}, lambda right, **_: ("SetFit", right[1]), "smallest k"),
            "05.1": ({}, lambda right: fp32_estimate(), "not fp32"),
            "05.2": ({"big": big}, lambda right, **_: (right[0], 1.0), "whole estimated peak"),  # the weights' ratio
            "05.3": ({"lever_table": lever_table, "levers": dict.fromkeys(names)}, lambda right, **_: {k: round(1 / v, 2) for k, v in right.items()},
                     "inverse of time"),
            "06.1": ({"model": classifier, "tokenizer": classifier_tok}, lowest, "not the lowest"),
            "06.2": ({"faith": pd.DataFrame({"sufficiency": [0.01, 0.28, 0.07]}, index=["integrated_gradients", "random", "attention"])},
                     ("random", 0.0), "lower sufficiency is better"),
            "06.3": ({"concept_tcav": tcav}, lambda right, concept_tcav: concept_tcav[concept_tcav.p_value < 0.05], "Holm-adjusted"),
            "07.1": ({}, "Her mother told her to wait for her.", "counterfactual_augment"),
            "07.2": ({"by_template": pd.DataFrame({"gap": [0.07, 0.06], "flip": [0.05, 0.08]}, index=["A", "B"])}, ("B", 0.08),
                     "mean gap"),
            "07.3": ({"train_df": train_df, "cda_train": counterfactual_table(train_df)},
                     lambda right, train_df, cda_train: right + int(cda_train.augmented.sum()), "subtract"),
            "08.1": ({"model": llm, "tokenizer": llm_tok, "plan": few_articles}, lambda right, **_: (*right[:2], right[2] + "!"), "most often"),
            "08.4": ({"model": llm, "tokenizer": llm_tok, "plan": few_articles},  # untuned, 0.0 by ranking and by generation here
                     lambda right, **_: (right[0], next(t for t in BBC_LABELS if t != right[1])), "ranked first"),
            "08.2": ({"model": llm}, lambda right, model: (right[0] * 4 // 7, *right[1:]), "r x (its inputs")}


def fp32_estimate()->dict:
    "Exercise 5.1's estimate made in fp32 instead of 16-bit mixed precision: a plausible slip."
    from finetune_book.compute import bert_base_config, estimate_training_memory
    return {ck: estimate_training_memory(bert_base_config(), "full", "fp32", 32, 512, gradient_checkpointing=ck, target="gpu").total / 1e9
            for ck in (False, True)}


def reference_only(exercise:str)->dict:
    "What a chapter's solution reads that its check does not: 02.3 predicts with the chapter's reloaded model."
    if exercise != "02.3": return {}
    from finetune_book.core import load_classifier
    from finetune_book.data import TWEET_LABELS
    model, tokenizer = load_classifier("minilm", labels=TWEET_LABELS)
    return {"reloaded": model, "reloaded_tok": tokenizer}


VALUE_EXERCISES = ["02.1", "02.2", "02.3", "03.1", "03.2", "03.3", "04.1", "04.2", "04.3", "05.1", "05.2", "05.3", "06.1", "06.2", "06.3", "07.1", "07.2", "07.3", "08.1", "08.2", "08.4"]


@pytest.mark.parametrize("exercise", VALUE_EXERCISES)
def test_each_value_check_passes_the_chapters_solution_and_fails_a_wrong_value_and_the_stub(exercise, copies, capsys):
    from finetune_book.workshop import EXERCISE_CHECKS, check_call, check_exercise
    context, wrong, hint = value_contexts()[exercise]
    name = EXERCISE_CHECKS[exercise].name
    right = reference_answer(exercise, name, **context, **reference_only(exercise))  # the chapter's solution, on the stand-ins
    assert check_exercise(exercise, right, quiet=True, **context) is True
    if callable(wrong): wrong = wrong(right, **context)
    assert check_exercise(exercise, wrong, **context) is False
    out = capsys.readouterr().out
    assert hint in out and (isinstance(right, bool) or str(right) not in out.replace(f"exercise {exercise}", ""))  # a hint, never the answer
    assert check_exercise(exercise, ..., quiet=True, **context) is False  # the stub
    with pytest.raises(TypeError, match="check_exercise"): check_exercise(exercise, right, unrelated=1)
    copy = copies[next(n for n in CHAPTERS if n.startswith(exercise[:2]))]
    assert check_call(exercise) in ["".join(c["source"]) for c in copy["cells"]]  # the student copy calls it with the tables


def test_the_adapter_check_reads_each_part_of_the_answer():
    from finetune_book.workshop import check_exercise
    context = value_contexts()["08.2"][0]
    count, peft, fits = reference_answer("08.2", "ex2", **context)
    assert check_exercise("08.2", (count, peft, fits), quiet=True, **context)
    assert not check_exercise("08.2", (count, peft - 1, fits), quiet=True, **context)  # peft's count is read, not assumed
    assert not check_exercise("08.2", (count, peft, not fits), quiet=True, **context)
