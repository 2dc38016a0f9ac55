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
