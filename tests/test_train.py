"""The training, evaluation and prediction functions, on small real runs."""
import numpy as np
import pandas as pd
import pytest

from finetune_book.core import load_classifier
from finetune_book.data import TWEET_LABELS, load_splits
from finetune_book.train import (classification_metrics, encode_data, evaluate_classifier, fine_tune, predict,
                                 predict_proba, tfidf_baseline)


@pytest.fixture(scope="module")
def data():
    return load_splits("tweets", "test")


@pytest.fixture(scope="module")
def tuned(data):
    return fine_tune("minilm", data["train"].iloc[:96], TWEET_LABELS, data["validation"].iloc[:48], epochs=1,
                     batch_size=16, max_length=64, progress=False)


def test_encode_data_pads_every_text_to_max_length(minilm_tokenizer):
    ids, masks, labels = encode_data([("short", 0), ("a somewhat longer text here", 2)], minilm_tokenizer, 32)
    assert [len(x) for x in ids] == [32, 32] and labels == [0, 2]
    assert sum(masks[0]) < sum(masks[1]) < 32


def test_classification_metrics_known_values():
    m = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert m["accuracy"] == 0.75
    assert abs(m["macro_f1"] - (2 / 3 + 0.8) / 2) < 1e-9


def test_fine_tune_logs_history_and_labels(tuned):
    assert tuned.labels == list(TWEET_LABELS)
    assert tuned.model.config.id2label == dict(enumerate(TWEET_LABELS))
    assert {"loss", "eval_loss", "eval_macro_f1"} <= set(tuned.history.columns)
    assert tuned.samples_per_second == pytest.approx(96 / tuned.seconds, rel=0.05)  # 96 rows, 1 epoch; not swapped
    assert tuned.history.eval_loss.notna().sum() == 1                                 # one evaluation per epoch


def test_book_recipe_settings(tmp_path):
    from finetune_book.train import _training_args
    args = _training_args(tmp_path, 1, 16, 3e-5, 0.01, 0, True, False, 6)
    # the kept epoch is the one with the lowest validation loss (02 explains why loss and not macro-F1)
    assert args.load_best_model_at_end and args.metric_for_best_model == "loss" and not args.greater_is_better
    assert args.eval_strategy == "epoch" and args.train_sampling_strategy == "group_by_length"
    assert not _training_args(tmp_path, 1, 16, 3e-5, 0.01, 0, False, False, 6).load_best_model_at_end
    # a caller's TrainingArguments override the recipe's, and the rest of the recipe stays
    plain = _training_args(tmp_path, 1, 16, 3e-5, 0.01, 0, True, False, 6, train_sampling_strategy="random")
    assert plain.train_sampling_strategy == "random" and plain.metric_for_best_model == "loss"


def test_evaluate_and_predict_agree(tuned, data):
    test = data["test"].iloc[:40]
    scores = evaluate_classifier(tuned.model, tuned.tokenizer, test)
    pred = predict(tuned.model, tuned.tokenizer, test.text.tolist())
    assert scores["accuracy"] == pytest.approx((pred.label.to_numpy() == test.label.to_numpy()).mean())
    cm = scores["confusion"]
    for lab in TWEET_LABELS:
        assert cm.loc[lab].sum() == (test.label == lab).sum()      # rows: the true class
        assert cm[lab].sum() == (pred.label == lab).sum()          # columns: the predicted class
    probs = pred.filter(like="p_")
    assert (pred.label == probs.idxmax(axis=1).str[2:]).all() and np.allclose(pred.score, probs.max(axis=1))


def test_predict_order_does_not_depend_on_batching(tuned):
    texts = ["a", "a much longer sentence about a cancelled flight", "ok", "delayed again, third time this week"]
    alone = np.vstack([predict_proba(tuned.model, tuned.tokenizer, [t]) for t in texts])  # one call per text: no sorting
    np.testing.assert_allclose(predict_proba(tuned.model, tuned.tokenizer, texts, batch_size=4), alone, atol=1e-5)
    np.testing.assert_allclose(predict_proba(tuned.model, tuned.tokenizer, texts, batch_size=1), alone, atol=1e-5)


def test_bad_inputs_are_clear_errors(tuned, data):
    with pytest.raises(ValueError, match="non-empty strings"):
        predict(tuned.model, tuned.tokenizer, ["fine", None])
    with pytest.raises(ValueError, match="empty"):
        predict(tuned.model, tuned.tokenizer, [])
    with pytest.raises(ValueError, match="list of strings"):
        predict(tuned.model, tuned.tokenizer, "one text")
    bad = data["test"].iloc[:10].assign(label="sarcastic")
    with pytest.raises(ValueError, match="Unknown label"):
        evaluate_classifier(tuned.model, tuned.tokenizer, bad)
    with pytest.raises(ValueError, match="Missing column"):
        fine_tune("minilm", data["train"].rename(columns={"text": "tweet"}), TWEET_LABELS, progress=False)


def test_fine_tune_does_not_modify_its_input(data):
    train = data["train"].iloc[:32]
    before = train.copy()
    fine_tune("minilm", train, TWEET_LABELS, epochs=1, max_length=32, progress=False)
    pd.testing.assert_frame_equal(train, before)


def test_saved_model_reloads_with_the_same_predictions(tuned, tmp_path):
    tuned.model.save_pretrained(tmp_path)
    tuned.tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    model, tok = load_classifier(str(tmp_path))
    assert model.config.id2label == tuned.model.config.id2label
    texts = ["@united thanks for the upgrade!", "worst airline ever"]
    np.testing.assert_allclose(predict_proba(model, tok, texts), predict_proba(tuned.model, tuned.tokenizer, texts),
                               atol=1e-6)


def test_tfidf_baseline_learns_the_tweets():
    data = load_splits("tweets", "cpu")
    base = tfidf_baseline(data["train"].iloc[:2000], data["test"], TWEET_LABELS)
    assert base["accuracy"] > 0.55          # three classes: guessing the majority gives ~0.42
    assert base["macro_f1"] > 0.45 and (base["confusion"].sum(axis=0) > 0).all()  # every class gets predicted


def test_fine_tune_trains_in_the_devices_precision(monkeypatch):
    from finetune_book import train
    monkeypatch.setattr(train, "precision_args", lambda: dict(bf16=True, fp16=False))  # what an A100 gets
    assert train._training_args("out", 1, 4, 1e-4, 0.0, 0, False, False, 10).bf16 is True
    assert train._training_args("out", 1, 4, 1e-4, 0.0, 0, False, False, 10, bf16=False).bf16 is False  # caller wins
