"""Loaders, splits, validation of a user's table, tokenization."""
import numpy as np
import pandas as pd
import pytest

from finetune_book.data import (BBC_LABELS, TWEET_LABELS, example_table_path, load_bbc, load_splits, padding_share,
                                sample_rows, split_data, tokenize_table, validate_table)


def test_tweets_schema(tweets):
    assert list(tweets.columns) == ["text", "label", "confidence", "topic"]
    assert len(tweets) == 38158
    assert set(tweets.label) == set(TWEET_LABELS)
    conf = tweets.confidence.dropna()
    assert conf.between(0, 1).all() and 0 < tweets.confidence.isna().sum() < len(tweets)
    assert {"airline", "driverless cars", "deflategate", "coachella"} <= set(tweets.topic)


def test_bbc_schema():
    bbc = load_bbc()
    assert list(bbc.columns) == ["text", "label", "title", "file"]
    assert len(bbc) == 2225 and set(bbc.label) == set(BBC_LABELS)
    assert bbc.file.is_unique


def test_split_is_deterministic_leak_free_and_leaves_input_alone(tweets):
    before = tweets.copy()
    s1, s2 = split_data(tweets, seed=3), split_data(tweets, seed=3)
    for k in s1:
        pd.testing.assert_frame_equal(s1[k], s2[k])
    texts = {k: set(v.text) for k, v in s1.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]
    assert not texts["validation"] & texts["test"]
    assert sum(len(v) for v in s1.values()) == len(tweets)
    import math
    firsts, test_firsts = tweets.drop_duplicates("text"), s1["test"].drop_duplicates("text")
    assert len(test_firsts) == math.ceil(0.1 * len(firsts))  # test_frac is a share of the distinct texts
    shares = test_firsts.label.value_counts(normalize=True) - firsts.label.value_counts(normalize=True)
    assert shares.abs().max() < 0.001  # stratified by label (an unstratified split misses this almost always)
    pd.testing.assert_frame_equal(tweets, before)


def test_split_rejects_bad_fractions(tweets):
    with pytest.raises(ValueError, match="sum to less than 1"):
        split_data(tweets, val_frac=0.5, test_frac=0.6)


def test_load_splits_sizes_follow_the_profile():
    data = load_splits("tweets", "test")
    assert [len(data[k]) for k in ("train", "validation", "test")] == [192, 96, 150]


def test_sample_rows_is_stratified_and_seeded(tweets):
    a, b = sample_rows(tweets, 300, seed=1), sample_rows(tweets, 300, seed=1)
    assert a.index.equals(b.index) and len(a) == 300
    assert not a.index.equals(sample_rows(tweets, 300, seed=2).index)
    expected = tweets.label.value_counts(normalize=True) * 300
    assert (a.label.value_counts() - expected).abs().max() <= 1  # stratified: within one row per class


@pytest.fixture
def table():
    return pd.read_csv(example_table_path())


def test_example_table_is_valid(table):
    assert validate_table(table, "review", "rating") == ["mixed", "negative", "positive"]


@pytest.mark.parametrize("break_it,message", [
    (lambda t: t.drop(columns="rating"), "Missing column"),
    (lambda t: t.iloc[:0], "no rows"),
    (lambda t: t.assign(review=t.review.where(t.index != 2, "   ")), r"empty \(rows 2\)"),
    (lambda t: t.assign(review=t.review.astype(object).where(t.index != 5, np.nan)), r"not strings \(rows 5\)"),
    (lambda t: t.assign(rating=t.rating.where(t.index != 7, np.nan)), r"missing/NaN \(rows 7\)"),
    (lambda t: t.assign(rating="positive"), "Only one class"),
])
def test_validate_table_names_the_problem(table, break_it, message):
    bad = break_it(table.copy())
    with pytest.raises(ValueError, match=message):
        validate_table(bad, "review", "rating")


def test_validate_table_unknown_labels_and_non_tables(table):
    with pytest.raises(ValueError, match="Unknown label"):
        validate_table(table, "review", "rating", labels=["positive", "negative"])
    two = pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]})
    assert validate_table(two) == ["x", "y"]
    with pytest.raises(ValueError, match="DataFrame"):
        validate_table(two.to_dict())


def test_validation_does_not_modify_input(table):
    before = table.copy()
    validate_table(table, "review", "rating")
    pd.testing.assert_frame_equal(table, before)


def test_tokenize_table_leaves_padding_to_the_batch(table, minilm_tokenizer):
    labels = ["mixed", "negative", "positive"]
    ds = tokenize_table(table, minilm_tokenizer, labels, text_col="review", label_col="rating")
    lengths = [len(x) for x in ds["input_ids"]]
    assert lengths == [len(minilm_tokenizer(t)["input_ids"]) for t in table.review] and len(set(lengths)) > 1  # not padded
    assert ds["labels"] == [labels.index(r) for r in table.rating]   # the given label order, not sorted
    short = tokenize_table(table, minilm_tokenizer, labels, max_length=8, text_col="review", label_col="rating")
    assert max(short["length"]) == 8 and short["input_ids"][0][-1] == minilm_tokenizer.sep_token_id  # truncated, [SEP] kept


def test_padding_share_orders_strategies():
    lengths = np.random.default_rng(0).integers(5, 100, 500)
    shares = [padding_share(lengths, 16, s) for s in ("max_length", "dynamic", "grouped")]
    assert shares[0] > shares[1] > shares[2] >= 0
    assert padding_share([1, 2, 3, 4], 2, "grouped") == pytest.approx(1 - 10 / 12)   # batches [1,2], [3,4]
    assert padding_share([1, 2, 3, 4], 2, "max_length", max_length=4) == pytest.approx(1 - 10 / 16)
    assert padding_share([1, 2, 3], 2, "grouped") == pytest.approx(1 - 6 / 7)        # the short last batch counts
    assert padding_share([3, 3, 3], 2, "dynamic") == 0.0
    with pytest.raises(ValueError, match="Unknown strategy"):
        padding_share(lengths, 16, "random")
