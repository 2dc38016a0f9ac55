"""Few-shot tools: k-shot sampling, EDA, augmentation tables, paraphrase judging, learning curves, LoRA."""
import numpy as np
import pandas as pd
import pytest
import torch

from finetune_book.data import TWEET_LABELS, sample_rows, split_data
from finetune_book.sparse import (EmbeddingCache, augment_table, curve_summary, eda, finetune_method,
                                  judge_paraphrases, learning_curve, load_synonyms, encoder_lora_config, margins,
                                  probe_method, sample_k_shot, sparse_plan, table_augmenter)


@pytest.fixture(scope="module")
def tweet_splits(tweets):
    return split_data(tweets, seed=0)


@pytest.fixture(scope="module")
def embed():
    return EmbeddingCache("minilm", max_length=64)


def test_k_shot_exact_deterministic_nested_and_untouched(tweets):
    before = tweets.copy()
    a, b = sample_k_shot(tweets, 5, seed=7), sample_k_shot(tweets, 5, seed=7)
    assert a.label.value_counts().to_dict() == {l: 5 for l in TWEET_LABELS}
    assert a.index.tolist() == b.index.tolist()
    assert set(a.index) <= set(sample_k_shot(tweets, 20, seed=7).index)          # a larger k keeps the rows
    assert set(a.index) != set(sample_k_shot(tweets, 5, seed=8).index)          # another seed, other rows
    assert (tweets.loc[a.index, "text"] == a.text).all()                        # original index kept
    assert a.index.is_monotonic_increasing                                       # "in their original order"
    pd.testing.assert_frame_equal(tweets, before)


@pytest.mark.parametrize("k, col, match", [(10**6, "label", "has only"), (0, "label", "k must be"),
                                            (2.5, "label", "k must be"), (2, "sentiment", "sentiment")])
def test_k_shot_errors_name_the_problem(tweets, k, col, match):
    with pytest.raises(ValueError, match=match):
        sample_k_shot(tweets, k, seed=0, label_col=col)


def test_k_shot_names_the_short_class():
    df = pd.DataFrame({"text": list("abcde"), "label": ["x", "x", "x", "y", "y"]})
    with pytest.raises(ValueError, match="Class 'y' has only 2 rows"):
        sample_k_shot(df, 3, seed=0)


def test_eda_keeps_handles_urls_and_gives_distinct_variants():
    text = "@united my flight was late again, great service http://t.co/x #fail"
    variants = eda(text, n=12, seed=0)
    assert variants and len(variants) == len(set(variants)) and text not in variants
    for v in variants:
        assert "@united" in v and "http://t.co/x" in v and "#fail" in v
    assert eda(text, n=4, seed=1) == eda(text, n=4, seed=1)
    assert eda(text, n=4, seed=1) != eda(text, n=4, seed=2)          # the seed matters


def test_synonyms_are_symmetric_and_exclude_the_word():
    syn = load_synonyms()
    assert "delayed" in syn["late"] and "late" in syn["delayed"]
    assert all(w not in [s.lower() for s in syn[w]] for w in syn)
    assert all(w in [x.lower() for x in syn[s.lower()]] for w in syn for s in syn[w] if s.lower() in syn)


def test_augment_table_returns_new_rows_with_their_source():
    df = pd.DataFrame({"text": ["the flight was late", "great crew"], "label": ["negative", "positive"]},
                      index=[10, 20])
    before = df.copy()
    out = augment_table(df, lambda t, n, s: [f"{t} ({i})" for i in range(n)], n=2)
    pd.testing.assert_frame_equal(df, before)
    assert len(out) == 6 and out.augmented.sum() == 4
    assert out[out.augmented].groupby("source").label.first().to_dict() == {10: "negative", 20: "positive"}


def test_judge_flags_copies_drift_and_empty(embed):
    pairs = pd.DataFrame({"text": ["my flight was delayed for three hours"] * 4,
                          "paraphrase": ["my flight was delayed for three hours",
                                         "the plane left three hours late, so I waited",
                                         "Chocolate cake recipes for beginners", ""]})
    judged = judge_paraphrases(pairs, embed)
    assert judged.reason.tolist() == ["copy", "ok", "drifted", "empty"]
    assert table_augmenter(judged)("my flight was delayed for three hours", 5, 0) == [pairs.paraphrase[1]]


def test_learning_curve_with_the_probe_beats_chance(tweet_splits, embed):
    test = sample_rows(tweet_splits["test"], 150, seed=0)
    curve = learning_curve({"probe": probe_method(embed)}, tweet_splits["train"], test, ks=(32,), seeds=(0, 1),
                           labels=TWEET_LABELS, progress=False)
    assert curve.n_train.tolist() == [96, 96]
    from finetune_book.data import majority_share
    assert curve.accuracy.mean() > majority_share(test.label) + 0.05   # beats always answering the commonest class
    assert curve.macro_f1.min() > 0.35                                 # always-negative scores about 0.20
    assert curve_summary(curve)["count"].item() == 2


def test_lora_method_trains_adapters_and_leaves_the_encoder(tweet_splits, monkeypatch):
    from finetune_book.core import load_classifier
    import finetune_book.sparse as sparse
    seen, real_predict = {}, sparse.predict
    def spy(model, tok, texts, **kw):
        seen["model"] = model
        return real_predict(model, tok, texts, **kw)
    monkeypatch.setattr(sparse, "predict", spy)
    method = finetune_method("minilm", epochs=1, max_steps=2, batch_size=4, lr=1e-3, max_length=32,
                             peft_config=encoder_lora_config())
    run = method(sample_k_shot(tweet_splits["train"], 2, seed=0), ["late again", "great crew"], TWEET_LABELS, 0)
    assert len(run.predictions) == 2 and set(run.predictions) <= set(TWEET_LABELS)
    assert run.steps == 2 and run.texts == 2 * 4  # max_steps full batches of 4 (the 6 rows are packed), as logged
    base = load_classifier("minilm", labels=TWEET_LABELS)[0].state_dict()
    tuned = seen["model"].get_base_model().state_dict()
    q = "bert.encoder.layer.0.attention.self.query.base_layer.weight"
    assert np.allclose(tuned[q].numpy(), base["bert.encoder.layer.0.attention.self.query.weight"].numpy())
    assert any("lora_B" in k and tuned[k].abs().sum() > 0 for k in tuned)   # adapters moved off their zero init


def test_margins_pairs_runs_by_seed():
    from scipy import stats
    curve = pd.DataFrame({"method": ["full"] * 3 + ["b"] * 3, "k": 4, "seed": [0, 1, 2, 2, 0, 1],
                          "accuracy": [0.50, 0.60, 0.70, 0.73, 0.53, 0.64]})  # b's rows in another seed order
    m = margins(curve, "full").iloc[0]
    assert m["lead"] == pytest.approx(0.1 / 3) and m["wins"] == 3 and m["runs"] == 3
    se = np.std([0.03, 0.04, 0.03], ddof=1) / np.sqrt(3)
    assert m["high"] - m["lead"] == pytest.approx(stats.t.ppf(0.975, 2) * se)  # t with n - 1 df, not 2 SE
    assert m["verdict"] == "ahead"  # paired by seed: the seed-to-seed spread (0.1) hides a lead that pairing shows


def test_margins_needs_the_baseline():
    curve = pd.DataFrame({"method": ["a", "b"], "k": [4, 4], "seed": [0, 0], "accuracy": [0.5, 0.6]})
    with pytest.raises(ValueError, match="No method named 'full'"):
        margins(curve, "full")


def test_profiles_have_plans():
    assert sparse_plan("cpu").ks[0] <= 4 and len(sparse_plan("cpu").seeds) >= 5
    gpu, cpu = sparse_plan("gpu"), sparse_plan("cpu")
    assert set(cpu.ks) <= set(gpu.ks) and set(cpu.probe_ks) <= set(gpu.probe_ks)  # the gpu plan covers the cpu plan's k
    assert gpu.encoder != cpu.encoder and gpu.n_test > cpu.n_test


def test_an_encoder_that_is_not_there_names_the_offline_fix():
    with pytest.raises(OSError, match="use 'minilm'"):
        EmbeddingCache("nobody/no-such-sentence-model")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EmbeddingCache("./no/such/folder")


@pytest.mark.parametrize("config, names", [("BertConfig", {"query", "value"}), ("MPNetConfig", {"q", "v"})])
def test_encoder_lora_config_finds_each_encoders_attention(config, names):
    "BERT calls its projections query/value, MPNet (the gpu plan's encoder) q/v: the default must adapt both."
    import transformers
    from peft import get_peft_model
    with torch.device("meta"):
        net = transformers.AutoModelForSequenceClassification.from_config(getattr(transformers, config)(num_hidden_layers=2))
    adapted = [n.split(".")[-2] for n, _ in get_peft_model(net, encoder_lora_config()).named_modules() if n.endswith("lora_A")]
    assert set(adapted) == names and len(adapted) == 2 * 2  # both projections in each of the 2 layers
