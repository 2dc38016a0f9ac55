"""Explanations: token attributions, erasure faithfulness, the randomization check, TCAV, highlights, the explorer."""
import numpy as np
import pytest
import torch

from finetune_book.data import TWEET_LABELS, sample_rows, split_data
from finetune_book.explain import (ATTRIBUTION_METHODS, Attribution, TCAVResult, aopc, attention_maps, attribute, attribute_many,
                                   cascading_randomization, class_probs, concept_vector, erasure_curves, explorer,
                                   highlight_html, ig_baseline, randomization_stages, rationale_ids, reinitialize,
                                   layer_states, per_text_aopc, special_attention_share, tcav, tcav_by_layer)
from finetune_book.train import fine_tune

TEXT = "@united my flight was delayed three hours, worst service ever"


@pytest.fixture(scope="module")
def parts(tweets):
    return split_data(tweets, seed=0)


@pytest.fixture(scope="module")
def trained(parts):
    "MiniLM fine-tuned briefly on tweets: a real classifier whose predictions the methods explain."
    r = fine_tune("minilm", sample_rows(parts["train"], 320, seed=0), list(TWEET_LABELS), epochs=1, lr=2e-4,
                  max_length=48, progress=False)
    return r.model, r.tokenizer


@pytest.fixture(scope="module")
def texts(parts):
    return sample_rows(parts["test"], 10, seed=1).text.tolist()


def test_attribute_scores_exactly_the_text_tokens(trained):
    model, tok = trained
    from finetune_book.train import predict_proba
    p = predict_proba(model, tok, [TEXT])[0]  # the train module's own path to the probabilities
    for method in ATTRIBUTION_METHODS:
        a = attribute(model, tok, TEXT, method=method, n_steps=8)
        assert a.tokens == tok.tokenize(TEXT)                       # special tokens left out, nothing else
        assert len(a.scores) == len(a.tokens) and np.isfinite(a.scores).all()
        assert [a.ids[p] for p in a.positions] == tok.convert_tokens_to_ids(a.tokens)
        assert a.label == model.config.id2label[a.target]
        assert a.target == int(p.argmax()) and a.prob == pytest.approx(float(p[a.target]), abs=1e-5)  # explains the prediction


@pytest.mark.parametrize("baseline", ["pad", "mask"])
def test_integrated_gradients_completeness(trained, baseline):
    model, tok = trained
    a = attribute(model, tok, TEXT, n_steps=32, baseline=baseline)
    base = ig_baseline(tok, a.ids, a.positions, baseline)
    assert all(base[p] != a.ids[p] for p in a.positions) and base[0] == a.ids[0] and base[-1] == a.ids[-1]
    p_base = float(class_probs(model, tok, [base])[0, a.target])
    assert abs(a.scores.sum() - a.delta - (a.prob - p_base)) < 1e-4   # captum's delta is exactly the miss
    assert abs(a.delta) < 0.05 * max(abs(a.prob - p_base), 1e-3) + 1e-3


def test_more_steps_shrink_the_delta(trained):
    model, tok = trained
    assert abs(attribute(model, tok, TEXT, n_steps=64).delta) < abs(attribute(model, tok, TEXT, n_steps=2).delta)


def test_leave_one_out_is_the_drop_when_a_token_goes(trained):
    model, tok = trained
    a = attribute(model, tok, TEXT, method="leave_one_out")
    for i in (0, 3, len(a.positions) - 1):
        p = a.positions[i]
        without = float(class_probs(model, tok, [a.ids[:p] + a.ids[p + 1:]])[0, a.target])
        assert abs(a.scores[i] - (a.prob - without)) < 1e-5


def test_target_explains_another_class(trained):
    model, tok = trained
    a = attribute(model, tok, TEXT, method="leave_one_out")
    other = (a.target + 1) % 3
    b = attribute(model, tok, TEXT, method="leave_one_out", target=other)
    assert b.target == other and b.label == TWEET_LABELS[other]
    c = attribute(model, tok, TEXT, method="leave_one_out", target=(a.target + 2) % 3)
    np.testing.assert_allclose(a.scores + b.scores + c.scores, 0, atol=1e-5)  # drops in 3 probabilities that sum to 1


@pytest.mark.parametrize("call, match", [
    (lambda m, t: attribute(m, t, ""), "empty"),
    (lambda m, t: attribute(m, t, "   \n"), "empty"),
    (lambda m, t: attribute(m, t, None), "empty"),
    (lambda m, t: attribute(m, t, "word " * 600), "at most 512"),
    (lambda m, t: attribute(m, t, "fine", method="lime"), "Unknown method"),
    (lambda m, t: attribute(m, t, "fine", target=3), "class id"),
    (lambda m, t: attribute(m, t, "fine", baseline="zeros"), "baseline"),
    (lambda m, t: attribute_many(m, t, "one text"), "wrap it"),
    (lambda m, t: attribute_many(m, t, []), "empty"),
    (lambda m, t: attribute_many(m, t, ["ok"], ("random", "shap")), "shap"),
    (lambda m, t: attention_maps(m, t, ""), "empty"),
    (lambda m, t: randomization_stages(m.base_model), "task head"),
])
def test_bad_input_names_the_problem(trained, call, match):
    with pytest.raises(ValueError, match=match):
        call(*trained)


def test_rationale_removes_or_keeps_the_top_tokens():
    a = Attribution("t", list("abcd"), np.array([0.1, 0.9, -0.3, 0.5]), 0, "x", 0.5, "m", [101, 1, 2, 3, 4, 102],
                    [1, 2, 3, 4])
    assert rationale_ids(a, 0.5, keep=False) == [101, 1, 3, 102]
    assert rationale_ids(a, 0.5, keep=True) == [101, 2, 4, 102]
    assert rationale_ids(a, 0.01, keep=True) == [101, 2, 102]          # at least one token
    assert rationale_ids(a, 1.0, keep=False) == [101, 102]             # special tokens always stay


def test_leave_one_out_is_the_best_single_token_eraser(trained, texts):
    "With a one-token rationale, leave-one-out's comprehensiveness is the largest possible: no method can beat it."
    model, tok = trained
    attrs = attribute_many(model, tok, texts, ATTRIBUTION_METHODS, n_steps=8)
    curves = erasure_curves(model, tok, attrs, fractions=(0.01,)).pivot(index="text", columns="method",
                                                                          values="comprehensiveness")
    for m in ATTRIBUTION_METHODS:
        assert (curves["leave_one_out"] >= curves[m] - 1e-5).all(), m


def test_aopc_averages_per_text_then_over_texts(trained, texts):
    model, tok = trained
    attrs = attribute_many(model, tok, texts[:4], ("random", "leave_one_out"))
    curves = erasure_curves(model, tok, attrs)
    table = aopc(curves)
    manual = curves[curves.method == "leave_one_out"].comprehensiveness.mean()   # equal bins per text
    assert abs(table.loc["leave_one_out", "comprehensiveness"] - manual) < 1e-6
    assert (table.texts == 4).all()
    per_text = curves[curves.method == "leave_one_out"].groupby("text").comprehensiveness.mean()
    assert table.loc["leave_one_out", "comp_sem"] == pytest.approx(per_text.std(ddof=1) / np.sqrt(4))  # SE over texts, not rows
    assert table.index[0] == "leave_one_out"  # sorted, and the best single-token eraser beats random
    a = attrs["leave_one_out"][0]                                               # one point by hand
    kept = float(class_probs(model, tok, [rationale_ids(a, 0.2, keep=True)])[0, a.target])
    row = curves[(curves.method == "leave_one_out") & (curves.text == 0) & (curves.fraction == 0.2)]
    assert row.sufficiency.item() == pytest.approx(a.prob - kept, abs=1e-5)
    assert row.tokens.item() == len(a.ids) - len(rationale_ids(a, 0.2, keep=False))  # the bin's size is what was erased
    pt = per_text_aopc(curves)
    assert list(pt.columns) == ["leave_one_out", "random"] and list(pt.index) == [0, 1, 2, 3]
    assert pt.loc[2, "random"] == pytest.approx(curves[(curves.method == "random") & (curves.text == 2)].comprehensiveness.mean())
    big = per_text_aopc(curves, min_tokens=2)  # only bins that erase two tokens or more
    only = curves[(curves.tokens >= 2) & (curves.method == "random")].groupby("text").comprehensiveness.mean()
    assert np.allclose(big["random"].to_numpy(), only.to_numpy()) and list(big.index) == list(only.index)


def test_cascading_randomization_works_on_a_copy_and_destroys_the_model(trained, texts):
    model, tok = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sanity = cascading_randomization(model, tok, texts[:3], methods="leave_one_out")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sanity.randomized.iloc[0] == "nothing" and sanity.randomized.iloc[1] == "head"
    assert len(sanity) == 1 + 1 + 1 + model.config.num_hidden_layers + 1
    assert abs(sanity.target_prob.iloc[-1] - 1 / 3) < 0.1        # a random model is close to uniform
    assert sanity.spearman.iloc[-1] < 0.7  # a randomized model's scores no longer track the trained model's


def test_cascading_randomization_runs_one_cascade_per_seed_and_method(trained, texts):
    model, tok = trained
    two = cascading_randomization(model, tok, texts[:2], methods=("attention", "leave_one_out"), seeds=(1, 2))
    stages = model.config.num_hidden_layers + 3
    assert len(two) == 2 * 2 * (stages + 1)
    assert list(two.groupby(["method", "seed"]).stage.apply(list)) == [list(range(stages + 1))] * 4  # every stage, in order
    last = two[two.stage == stages].set_index(["method", "seed"]).target_prob
    assert last["attention", 1] != last["attention", 2]               # each seed drew its own weights
    assert last["attention", 1] == pytest.approx(last["leave_one_out", 1])  # one randomized model per seed, all methods
    again = cascading_randomization(model, tok, texts[:2], methods="attention", seeds=2)
    assert np.allclose(again.spearman, two[(two.method == "attention") & (two.seed == 2)].spearman)  # the seed decides


def test_reinitialize_draws_fresh_weights(trained):
    model, _ = trained
    import copy
    block = copy.deepcopy(model.base_model.encoder.layer[0])
    reinitialize([block], std=0.02)
    ln = block.output.LayerNorm
    assert torch.all(ln.weight == 1) and torch.all(ln.bias == 0)
    assert torch.all(block.attention.self.query.bias == 0)
    w = block.attention.self.query.weight
    assert abs(float(w.detach().std()) - 0.02) < 0.002 and not torch.equal(w, model.base_model.encoder.layer[0].attention.self.query.weight)


def test_attention_maps_are_distributions_and_eager_is_undone(trained):
    model, tok = trained
    impl = model.config._attn_implementation
    tokens, maps = attention_maps(model, tok, TEXT)
    assert maps.shape == (model.config.num_hidden_layers, model.config.num_attention_heads, len(tokens), len(tokens))
    assert tokens[0] == "[CLS]"
    assert model.config._attn_implementation == impl
    share = special_attention_share(model, tok, [TEXT, "thanks"])
    special = np.isin(tokens, tok.all_special_tokens)  # by hand: the attention each layer puts on [CLS] and [SEP]
    single = special_attention_share(model, tok, [TEXT])
    assert len(single) == model.config.num_hidden_layers
    np.testing.assert_allclose(single.attention_on_special, maps[..., special].sum(-1).mean(axis=(1, 2)), atol=1e-6)
    assert share.special_tokens_share.iloc[0] == pytest.approx(np.mean([2 / len(tok(t)["input_ids"]) for t in [TEXT, "thanks"]]))


def test_concept_vector_points_at_the_concept():
    rng = np.random.default_rng(0)
    concept = rng.normal(0, 1, (40, 8)) + np.eye(8)[2] * 4             # the concept lives along axis 2
    other = rng.normal(0, 1, (40, 8))
    cav, acc = concept_vector(concept, other)
    assert abs(np.linalg.norm(cav) - 1) < 1e-9 and acc > 0.9 and np.argmax(cav) == 2


def test_concept_vector_survives_features_that_barely_vary():
    "Like [CLS] in MiniLM's middle layers: a large constant with tiny variation; unscaled, the solver never moves."
    rng = np.random.default_rng(1)
    concept = 9.7 + 1e-4 * rng.normal(0, 1, (50, 16)) + 3e-4 * np.eye(16)[5]
    other = 9.7 + 1e-4 * rng.normal(0, 1, (50, 16))
    cav, acc = concept_vector(concept, other)
    assert np.isfinite(cav).all() and np.argmax(cav) == 5 and acc > 0.9
    with pytest.raises(ValueError, match="cannot be told apart"):
        concept_vector(np.ones((10, 4)), np.ones((10, 4)))


def test_tcav_is_reproducible_and_checks_its_input(trained, parts):
    model, tok = trained
    pool = parts["train"].text.tolist()
    concept = [t for t in pool if "delay" in t.lower()][:20]
    others = [t for t in pool if "delay" not in t.lower()][:40]
    tests = pool[-30:]
    a = tcav(model, tok, concept, others, tests, "negative", layer=3, repeats=3, set_size=10, max_length=48)
    b = tcav(model, tok, concept, others, tests, "negative", layer=3, repeats=3, set_size=10, max_length=48)
    assert np.array_equal(a.concept_scores, b.concept_scores) and len(a.random_scores) == 3
    n = len(tests)  # a TCAV score is the share of the *test* texts whose gradient points along the CAV
    assert np.allclose(a.concept_scores * n, np.round(a.concept_scores * n))
    assert np.allclose(a.random_scores * n, np.round(a.random_scores * n))
    with pytest.raises(ValueError, match="Unknown label"):
        tcav(model, tok, concept, others, tests, "angry")
    with pytest.raises(ValueError, match="at least"):
        tcav(model, tok, concept, others[:5], tests, "negative", set_size=10)
    with pytest.raises(ValueError, match="layer must"):
        tcav(model, tok, concept, others, tests, "negative", layer=0, set_size=10)


def test_cls_gradients_match_autograd_at_the_last_layer(trained):
    "At the last block, the gradient of a log-probability w.r.t. [CLS] is the head's own derivative: check it by hand."
    model, tok = trained
    n = model.config.num_hidden_layers
    acts, grads = layer_states(model, tok, ["the flight was late"], 32, target=0)
    assert acts.shape[:2] == grads.shape[:2] == (n + 1, 1)
    h = torch.tensor(acts[n], requires_grad=True)
    logits = model.classifier(model.base_model.pooler.activation(model.base_model.pooler.dense(h)))
    torch.log_softmax(logits, -1)[0, 0].backward()
    assert np.allclose(grads[n], h.grad.numpy(), atol=1e-5)


def test_tcav_pairs_each_concept_vector_with_a_random_one(trained, parts):
    "The paired test: concept CAV r and random CAV r share random set r; the p-value is a paired t-test over them."
    model, tok = trained
    pool = parts["train"].text.tolist()
    concept = [t for t in pool if "thank" in t.lower()][:20]
    others = [t for t in pool if "thank" not in t.lower()][:40]
    table = tcav_by_layer(model, tok, {"thanks": concept}, others, {"positive": pool[-20:], "negative": pool[-40:-20]},
                          layers=(2, 3), repeats=4, set_size=10, max_length=48)
    assert list(zip(table.layer, table.label)) == [(2, "positive"), (2, "negative"), (3, "positive"), (3, "negative")]
    one = tcav(model, tok, concept, others, pool[-40:-20], "negative", layer=3, repeats=4, set_size=10, max_length=48)
    assert one.concept_scores.mean() == pytest.approx(table.tcav.iloc[3]) and one.random_scores.mean() == pytest.approx(table.random.iloc[3])
    from scipy.stats import ttest_ind, ttest_rel
    r = TCAVResult("c", "x", 1, np.array([0.2, 0.5, 0.9, 0.4]), np.array([0.1, 0.45, 0.7, 0.35]), 0.7)
    assert r.p_value == pytest.approx(ttest_rel(r.concept_scores, r.random_scores).pvalue)
    assert r.p_value < ttest_ind(r.concept_scores, r.random_scores).pvalue  # pairing removes the spread between random sets


def test_highlight_html_escapes_and_shades():
    a = Attribution("x", ["<script>", "##s"], np.array([2.0, -1.0]), 0, "neg", 0.9, "random")
    out = highlight_html(a)
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "rgba(0,150,0,1.00)" in out and "rgba(210,0,0,0.50)" in out and ">s</span>" in out


def test_explorer_explains_on_click_and_shows_errors(trained):
    model, tok = trained
    ui = explorer(model, tok, n_steps=4)
    box, method, button = ui.children[0].children
    box.value, method.value = "great crew, thank you", "attention"
    button.click()
    assert "crew" in ui.children[1].value and "attention" in ui.children[1].value
    box.value = " "
    button.click()
    assert "empty" in ui.children[1].value
