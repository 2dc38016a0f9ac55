"""The data-quality checks: duplicates, conflicts, junk, label issues, audit and cleaning."""
import numpy as np
import pandas as pd
import pytest

from finetune_book.data import BBC_LABELS, load_bbc, sample_rows
from finetune_book.data_quality import (audit, clean, find_duplicates, find_junk, find_label_conflicts,
                                        find_label_issues, inject_label_noise, normalize_text, out_of_fold_probs,
                                        precision_recall)


@pytest.fixture(scope="module")
def bbc():
    return sample_rows(load_bbc(), 500, seed=0)


@pytest.fixture(scope="module")
def bbc_features(bbc):
    "Cheap real features of the articles (TF-IDF reduced to 64 dimensions): the MiniLM embeddings are the chapter's job."
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    return TruncatedSVD(64, random_state=0).fit_transform(TfidfVectorizer(min_df=2).fit_transform(bbc.text))


def test_normalize_text_unifies_case_space_and_urls():
    assert normalize_text("Hello  World http://t.co/abc") == "hello world <url>" == normalize_text("hello world https://x.y/z")
    assert normalize_text("late again") != normalize_text("late gain")


def test_duplicates_and_conflicts_on_a_known_table():
    df = pd.DataFrame({"text": ["Late again", "late  again", "Great crew", "great crew", "ok"],
                       "label": ["negative", "negative", "positive", "neutral", "neutral"]})
    before = df.copy()
    assert find_duplicates(df).row.tolist() == [0, 1, 2, 3]
    assert find_duplicates(df).group.tolist() == [0, 0, 1, 1]
    conflicts = find_label_conflicts(df)
    assert conflicts.row.tolist() == [2, 3]
    assert set(conflicts.labels_in_group) == {"neutral, positive"}
    pd.testing.assert_frame_equal(df, before)


def test_junk_rows():
    df = pd.DataFrame({"text": ["@united http://t.co/x #fail", "the crew was lovely today", "ÂÃÄÅÆÇ ÈÉ ÊË ok ÌÍ"]})
    assert find_junk(df).row.tolist() == [0]  # by default only a row with no word is junk
    assert find_junk(df, max_nonlatin=0.3).row.tolist() == [0, 2]  # the encoding rule, when asked for


def test_inject_label_noise_leaves_input_and_flips_exactly(bbc):
    labels = bbc.label.copy()
    noisy, flipped = inject_label_noise(labels, 0.2, seed=3)
    pd.testing.assert_series_equal(labels, bbc.label)
    assert flipped.sum() == round(0.2 * len(labels))
    assert (noisy[flipped] != labels.to_numpy()[flipped]).all() and (noisy[~flipped] == labels.to_numpy()[~flipped]).all()


def test_out_of_fold_probs_checks_its_inputs(bbc_features, bbc):
    probs = out_of_fold_probs(bbc_features, bbc.label, list(BBC_LABELS))
    assert probs.shape == (len(bbc), 5)
    assert not np.allclose(out_of_fold_probs(bbc_features, bbc.label, list(BBC_LABELS), seed=1), probs)  # folds matter: out-of-fold
    rev = out_of_fold_probs(bbc_features, bbc.label, list(BBC_LABELS)[::-1])
    assert (np.asarray(BBC_LABELS[::-1])[rev.argmax(1)] == bbc.label.to_numpy()).mean() > 0.9  # columns in `classes` order
    with pytest.raises(ValueError, match="one row per example"):
        out_of_fold_probs(bbc_features[:10], bbc.label)
    with pytest.raises(ValueError, match="Too few rows per class"):
        out_of_fold_probs(bbc_features[:6], ["a", "b", "a", "b", "a", "b"])


def test_find_label_issues_errors():
    with pytest.raises(ValueError, match="2 texts but 3 labels"):
        find_label_issues(["a", "b"], ["x", "y", "x"])
    with pytest.raises(ValueError, match="empty"):
        find_label_issues(["a", " "], ["x", "y"], pred_probs=np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="shape"):
        find_label_issues(["a", "b"], ["x", "y"], pred_probs=np.full((2, 3), 1 / 3))


def test_audit_and_clean_keep_everything_accounted_for(bbc, bbc_features):
    df = bbc.copy()
    df = pd.concat([df, df.iloc[:3]])                       # three exact duplicates
    noisy, flipped = inject_label_noise(df.label, 0.05, seed=0)
    df["label"] = noisy
    before = df.copy()
    feats = np.vstack([bbc_features, bbc_features[:3]])
    report = audit(df, features=feats)
    n = len(bbc)
    dup_rows = set(report.flagged[report.flagged.issue == "duplicate"].row)
    assert {n, n + 1, n + 2} <= dup_rows and not {0, 1, 2} & dup_rows  # the later copies are flagged, the first kept
    y = pd.Series(df.label.to_numpy()).map({c: i for i, c in enumerate(report.classes)}).to_numpy()
    np.testing.assert_allclose(report.label_quality, report.pred_probs[np.arange(len(df)), y], atol=1e-6)  # row order
    kept, removed, relabelled = clean(df, report)
    assert relabelled.empty  # no decisions, no relabelling
    flagged = report.flagged[report.flagged.issue.isin(["label_issue", "label_conflict", "duplicate"])]
    assert len(removed) == flagged.row.nunique() and len(kept) == len(df) - len(removed)
    assert set(removed.issue.str.split(", ").explode()) <= {"label_issue", "label_conflict", "duplicate"}
    pd.testing.assert_frame_equal(df, before)
    with pytest.raises(ValueError, match="Unknown issue"):
        clean(df, report, issues=("typo",))
    with pytest.raises(ValueError, match="report is for"):
        clean(df.iloc[:10], report)
    md = report.markdown()
    assert md.startswith("# Data audit") and "| label_issues |" in md
