"""Fairness tools: the probe set, counterfactual swaps, counterfactual gaps, group metrics, mitigation helpers."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finetune_book.data import TWEET_LABELS, sample_rows, split_data
from finetune_book.fairness import (PEOPLE, bootstrap_ci, counterfactual_augment, counterfactual_gap,
                                    counterfactual_pairs, counterfactual_table, gender_mentions, group_metrics,
                                    make_probe_set, mask_identity_words, mitigation_run, mitigation_summary,
                                    placebo_pairs, plant_gender_skew, plant_name_skew, probe_name_swaps,
                                    probe_probabilities)
from finetune_book.train import fine_tune

LABELS = list(TWEET_LABELS)


@pytest.fixture(scope="module")
def probes():
    return make_probe_set()


def test_probe_file_in_data_matches_the_function(probes):
    saved = pd.read_csv(Path(__file__).parents[1] / "data" / "fairness_probes.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(saved, probes, check_dtype=False)


def test_probe_set_layout(probes):
    assert len(probes) == 144 * 60 and probes.text.is_unique
    assert set(probes.sentiment) == set(LABELS)
    assert (probes.groupby("gender").size() == len(probes) // 2).all()
    row = probes[(probes.person == "my mom") & (probes.template_id == 1) & (probes.emotion_word == "glad")]
    assert row.text.item() == "The situation makes my mom feel glad." and row.sentiment.item() == "positive"
    assert probes[(probes.person == "Tia") & (probes.template_id == 4)].text.str.contains("herself").all()


def test_probe_set_extends_with_new_people():
    extra = pd.concat([PEOPLE, pd.DataFrame([dict(person="my niece", gender="female", race="unspecified", kind="noun",
                                                  slot=10),
                                             dict(person="my nephew", gender="male", race="unspecified", kind="noun",
                                                  slot=10)])])
    p = make_probe_set(people=extra)
    assert len(p) == 144 * 62 and "My niece feels angry." in set(p.text)
    pairs = counterfactual_pairs(p)
    assert ((pairs.person_a == "my niece") & (pairs.person_b == "my nephew")).sum() == 144


@pytest.mark.parametrize("text, swapped", [
    ("She loved her new job.", "He loved his new job."),
    ("He said his brother was angry.", "She said her sister was angry."),
    ("I told her the flight was late.", "I told him the flight was late."),
    ("Her mother told her to wait for her.", "His father told him to wait for him."),
    ("MY WIFE and I", "MY HUSBAND and I"),
    ("the hero's heritage", "the hero's heritage"),                        # whole words only
    ("@united my mom's flight", "@united my dad's flight"),
    ("I told her her bag was late", "I told him his bag was late"),         # two her's in a row
])
def test_counterfactual_augment_swaps(text, swapped):
    assert counterfactual_augment([text]) == [swapped]


def test_counterfactual_augment_leaves_input_and_checks_it():
    texts = ["She is here", "He is there"]
    before = list(texts)
    assert counterfactual_augment(texts) == ["He is here", "She is there"] and texts == before
    with pytest.raises(ValueError, match="NaN"):  # counterfactual_augment's own checks live in the chapter
        mask_identity_words(["fine", float("nan")])


def test_every_noun_probe_swaps_into_its_counterpart(probes):
    pairs = counterfactual_pairs(probes)
    nouns = pairs[pairs.kind == "noun"]
    assert len(nouns) == 144 * 10 and counterfactual_augment(nouns.text_a.tolist()) == nouns.text_b.tolist()


def test_pairs_errors_name_the_problem(probes):
    with pytest.raises(ValueError, match="Unknown attribute"):
        counterfactual_pairs(probes, "religion")
    with pytest.raises(ValueError, match="empty"):
        counterfactual_pairs(probes.iloc[:0])
    with pytest.raises(ValueError, match="nonbinary"):
        counterfactual_pairs(probes, "gender", ("female", "nonbinary"))
    race = counterfactual_pairs(probes, "race", ("african_american", "european_american"))
    assert len(race) == 144 * 20 and set(race.kind) == {"name"}              # names only, paired within gender
    assert (race.person_a.map(dict(zip(probes.person, probes.gender))) == race.gender).all()


@pytest.fixture(scope="module")
def trained(tweets):
    parts = split_data(tweets, seed=0)
    r = fine_tune("minilm", sample_rows(parts["train"], 240, seed=0), LABELS, epochs=1, lr=2e-4, max_length=32,
                  progress=False)
    return r.model, r.tokenizer


def test_counterfactual_gap_is_zero_for_identical_twins_and_matches_by_hand(trained, probes):
    model, tok = trained
    sample = probes[probes.template_id.isin([0, 8])]
    gaps = counterfactual_gap(model, tok, sample, max_length=32)
    from finetune_book.train import predict_proba
    row = gaps.iloc[0]
    pa, pb = predict_proba(model, tok, [row.text_a, row.text_b], max_length=32)
    assert row.gap == pytest.approx(0.5 * np.abs(pa - pb).sum(), abs=1e-6) and row.flip == (pa.argmax() != pb.argmax())
    assert row.signed == pytest.approx(pa[0] - pb[0], abs=1e-6)  # P(first class): the a side minus the b side
    assert len(gaps) == 630 and not gaps.duplicated(["text_a", "text_b"]).any()  # 21 template rows x 30 pairs, each once
    masked = sample.assign(text=mask_identity_words(sample.text.tolist(), tok.mask_token))
    twins = counterfactual_gap(model, tok, masked, max_length=32)
    assert np.allclose(twins[twins.kind == "noun"].gap, 0, atol=1e-6) and not twins[twins.kind == "noun"].flip.any()


def test_group_metrics_by_hand_and_errors():
    y_true = ["negative", "positive", "negative", "neutral", "negative", "positive"]
    y_pred = ["negative", "negative", "negative", "neutral", "positive", "positive"]
    groups = ["f", "f", "f", "m", "m", "m"]
    by_group, diffs = group_metrics(y_true, y_pred, groups, LABELS, n_boot=20)
    assert by_group.loc["f", ("value", "accuracy")] == pytest.approx(2 / 3)
    assert by_group.loc["m", ("value", "rate_negative")] == pytest.approx(0.0)
    assert diffs.loc["negative", "demographic_parity"] == pytest.approx(1.0)      # f: 3/3 negative, m: 0/3
    assert list(by_group.n) == [3, 3]
    with pytest.raises(ValueError, match="lengths"):
        group_metrics(y_true, y_pred[:-1], groups, LABELS)
    with pytest.raises(ValueError, match="empty"):
        group_metrics([], [], [], LABELS)
    with pytest.raises(ValueError, match="angry"):
        group_metrics(["angry"], ["negative"], ["f"], LABELS)


def test_bootstrap_ci_brackets_the_statistic():
    x = np.random.default_rng(0).normal(1.0, 1.0, 400)
    low, high = bootstrap_ci(lambda idx: x[idx].mean(), len(x), n_boot=300)
    low90, high90 = bootstrap_ci(lambda idx: x[idx].mean(), len(x), n_boot=300, level=0.9)
    assert low < low90 < x.mean() < high90 < high                          # `level` is used: a 90% interval is inside
    assert abs((high - low) - 2 * 1.96 * x.std(ddof=1) / np.sqrt(len(x))) < 0.03   # the normal-theory width


def test_counterfactual_table_adds_swapped_copies_and_keeps_input():
    df = pd.DataFrame({"text": ["She is late", "no people here", "his bag"], "label": ["negative", "neutral", "neutral"]})
    before = df.copy()
    out = counterfactual_table(df)
    assert out.augmented.sum() == 2 and out[out.augmented].text.tolist() == ["He is late", "her bag"]
    assert out[out.augmented].label.tolist() == ["negative", "neutral"]
    pd.testing.assert_frame_equal(df, before)
    with pytest.raises(ValueError, match="tweet"):
        counterfactual_table(df, text_col="tweet")


def test_gender_mentions():
    assert list(gender_mentions(["my mom", "his dad", "her and him", "nobody"])) == ["female", "male", "both", "none"]


def test_mitigation_summary_pairs_by_seed():
    runs = pd.DataFrame([dict(variant="untreated", seed=0, accuracy=0.70, gender_gap=0.02, noun_gap=0.02, name_gap=0.02, flips=0.1, noun_signed_gap=0.02),
                         dict(variant="untreated", seed=1, accuracy=0.60, gender_gap=0.04, noun_gap=0.04, name_gap=0.04, flips=0.1, noun_signed_gap=0.02),
                         dict(variant="cda", seed=0, accuracy=0.69, gender_gap=0.01, noun_gap=0.01, name_gap=0.01, flips=0.05, noun_signed_gap=-0.005),
                         dict(variant="cda", seed=1, accuracy=0.61, gender_gap=0.01, noun_gap=0.01, name_gap=0.01, flips=0.05, noun_signed_gap=-0.005)])
    s = mitigation_summary(runs)
    assert s.loc["cda", "gap_cut"] == pytest.approx((0.5 + 0.75) / 2)
    assert s.loc["cda", "accuracy_change"] == pytest.approx(0.0)
    assert s.loc["cda", "gap_cut_std"] == pytest.approx(np.std([0.5, 0.75], ddof=1))          # per-seed cuts
    assert s.loc["cda", "accuracy_change_std"] == pytest.approx(np.std([-1.0, 1.0], ddof=1))  # paired per seed, points
    assert s.loc["cda", "signed_cut"] == pytest.approx(0.75)                   # |-0.005| vs |0.02|: direction-free


def test_placebo_pairs_swap_within_the_same_group(probes):
    pl = placebo_pairs(probes)
    assert len(pl) == len(probes) and (pl.person_a != pl.person_b).all()
    gender = dict(zip(probes.person, probes.gender))
    assert (pl.person_a.map(gender) == pl.person_b.map(gender)).all() and (pl.template_a == pl.template_b).all()


def test_plant_gender_skew_adds_real_skewed_rows(tweets):
    parts = split_data(tweets, seed=0)
    train = sample_rows(parts["train"], 100, seed=0)
    pool = parts["train"].drop(index=train.index)
    out = plant_gender_skew(train, pool, 40)
    added = out.iloc[len(train):]
    assert len(added) == 40 and set(added.index) <= set(pool.index) and not set(added.index) & set(train.index)
    mention = gender_mentions(added.text)
    assert set(added[mention == "female"].label) == {"negative"} and set(added[mention == "male"].label) == {"positive"}


def test_mitigation_run_rejects_an_unknown_variant(probes):
    with pytest.raises(ValueError, match="Unknown variant"):
        mitigation_run("reweigh", pd.DataFrame(), pd.DataFrame(), probes, LABELS, seed=0)


def test_probe_name_swaps_pair_names_like_the_gap_does(probes):
    swaps = probe_name_swaps()
    assert swaps["Ebony"] == "Alonzo" and swaps["Amanda"] == "Adam" and len(swaps) == 20  # slot 0 of each group
    pairs = counterfactual_pairs(probes[probes.kind == "name"])
    assert (pairs.person_a.map(swaps) == pairs.person_b).all()
    with pytest.raises(ValueError, match="kind"):
        probe_name_swaps(PEOPLE.drop(columns="kind"))


def test_plant_name_skew_signs_plain_tweets_and_leaves_the_input_alone(tweets):
    parts = split_data(tweets, seed=0)
    train = sample_rows(parts["train"], 100, seed=0)
    pool = parts["train"].drop(index=train.index)
    before = pool.copy()
    out = plant_name_skew(train, pool, 40, names={"Ebony": "Alonzo", "Amanda": "Adam"})
    added = out.iloc[len(train):]
    pd.testing.assert_frame_equal(pool, before)
    assert len(added) == 40 and set(added.index) <= set(pool.index)
    signer = added.text.str.extract(r"\^(\w+)$")[0]
    assert set(signer[added.label == "negative"]) == {"Ebony", "Amanda"}   # both female names, cycled
    assert set(signer[added.label == "positive"]) == {"Alonzo", "Adam"}
    assert (added.text.str.replace(r" \^\w+$", "", regex=True) == pool.loc[added.index, "text"]).all()  # the real tweet, signed
    assert set(gender_mentions(added.text)) == {"none"}
    with pytest.raises(ValueError, match="pass n <="):
        plant_name_skew(train, pool, 10**6)
    with pytest.raises(ValueError, match="names is empty"):
        plant_name_skew(train, pool, 4, names={})


def test_mitigation_run_refuses_to_reuse_a_model_for_a_treated_variant(probes):
    with pytest.raises(ValueError, match="trained= reuses an untreated model"):
        mitigation_run("cda", pd.DataFrame(), pd.DataFrame(), probes, LABELS, seed=0, trained=object())


def test_mitigation_summary_refuses_unpaired_seeds():
    row = dict(accuracy=0.7, gender_gap=0.02, noun_signed_gap=0.01)
    runs = pd.DataFrame([dict(variant="untreated", seed=0, **row), dict(variant="cda", seed=1, **row)])
    with pytest.raises(ValueError, match=r"seeds \[1\]"):
        mitigation_summary(runs)
    with pytest.raises(ValueError, match="No 'untreated' runs"):
        mitigation_summary(runs[runs.variant == "cda"])


def test_counterfactual_gap_uses_the_given_probabilities_and_refuses_missing_ones(trained, probes):
    model, tok = trained
    sample = probes[probes.template_id == 0]
    probs = probe_probabilities(model, tok, sample.text, max_length=32)
    assert len(probs) == len(sample)                                              # each text scored once
    fresh = counterfactual_gap(model, tok, sample, max_length=32)
    reused = counterfactual_gap(None, None, sample, max_length=32, probs=probs)  # no model: nothing is scored again
    assert np.allclose(fresh.gap, reused.gap, atol=1e-6) and (fresh.text_a == reused.text_a).all()
    with pytest.raises(ValueError, match="probs lacks"):
        counterfactual_gap(None, None, sample, probs=dict(list(probs.items())[:3]))
