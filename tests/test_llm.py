"""The LLM chapter's helpers: instruction sets, chat formatting, the loss mask, scoring, noisy answers, generation."""
import numpy as np
import pandas as pd
import pytest

from finetune_book.core import chat_messages, format_prompt, generate, load_chat_model
from finetune_book.data import BBC_LABELS, TWEET_LABELS
from finetune_book.llm import (GENERAL_QUESTIONS, TOPIC_REQUEST, answer_token_nll, corrupt_responses,
                               decoder_lora_config, label_logprobs, lora_parameter_count, loss_mask, make_instructions,
                               parse_label, pick_shots, rank_classify, response_nll, score_answers)


@pytest.fixture(scope="module")
def chat_model():
    return load_chat_model("smollm2-135m")


@pytest.fixture(scope="module")
def instructions(tweets):
    return make_instructions(tweets.head(30))


def test_make_instructions_fills_the_request_and_keeps_the_caller_table(tweets):
    rows = tweets.head(5)
    before = rows.copy()
    out = make_instructions(rows)
    pd.testing.assert_frame_equal(rows, before)
    assert list(out.columns) == ["prompt", "response"] and list(out.index) == list(rows.index)
    assert all(t in p for t, p in zip(rows.text, out.prompt)) and list(out.response) == list(rows.label)


def test_make_instructions_rejects_bad_rows(tweets):
    rows = tweets.head(4).copy()
    rows.loc[rows.index[1], "text"] = "   "
    with pytest.raises(ValueError, match=rf"empty \(rows {rows.index[1]}\)"):  # the row's index, traceable
        make_instructions(rows)


def test_make_instructions_refuses_numeric_labels_with_the_cast(tweets):
    "One rule in every chapter (issue 18): labels are text; numbers are refused with the one-line fix."
    rows = tweets.head(4).assign(label=[1, 2, 1, 2])
    with pytest.raises(TypeError, match="cast your labels to str"): make_instructions(rows, labels=("1", "2"))
    assert list(make_instructions(rows.astype({"label": str}), labels=("1", "2")).response) == ["1", "2", "1", "2"]
    with pytest.raises(ValueError, match=r"Unknown label\(s\) \['3'\]"):
        make_instructions(rows.assign(label=["1", "2", "3", "1"]), labels=("1", "2"))


def test_make_instructions_cuts_long_texts_for_the_topic_task():
    df = pd.DataFrame({"text": ["word " * 400], "label": ["tech"]})
    out = make_instructions(df, TOPIC_REQUEST, BBC_LABELS, max_chars=100)
    article = out.prompt.iloc[0].split("Article: ")[1]
    assert len(article) <= 104 and article.endswith("...")


def test_loss_mask_covers_exactly_the_answer_and_end_token(chat_model, instructions):
    _, tok = chat_model
    m = loss_mask(tok, instructions.prompt.iloc[0], instructions.response.iloc[0])
    counted = m[m.in_loss]
    assert counted.index.min() == len(m) - len(counted)        # one block at the end
    assert tok.decode(counted.id.tolist()).startswith(instructions.response.iloc[0] + "<|im_end|>")
    assert tok.decode(m.id.tolist()[:len(m) - len(counted)]).endswith("<|im_start|>assistant\n")  # prompt ends the block


def test_trl_trains_on_the_loss_mask_and_the_flag_changes_it(chat_model, instructions, tmp_path):
    from finetune_book.llm import sft_trainer
    model, tok = chat_model
    m = loss_mask(tok, instructions.prompt.iloc[0], instructions.response.iloc[0])
    row = sft_trainer(model, tok, instructions.head(2), str(tmp_path / "a"), steps=1).train_dataset[0]
    assert row["input_ids"] == m.id.tolist()
    seen = [bool(x) for x in row["completion_mask"]] if "completion_mask" in row else [l != -100 for l in row["labels"]]
    assert seen == m.in_loss.tolist()                          # TRL's loss sees the answer only
    full = sft_trainer(model, tok, instructions.head(2), str(tmp_path / "b"), steps=1, completion_only=False)
    assert full.args.completion_only_loss is False             # the flag reaches TRL
    assert not hasattr(model, "peft_config")                   # the caller's model got no adapters



def test_sft_trainer_sets_both_precision_flags(chat_model, instructions, tmp_path, monkeypatch):
    "TRL turns bf16 on unless told otherwise (its default is for GPUs): `precision_args` must reach `SFTConfig`."
    from finetune_book import llm
    calls = []
    monkeypatch.setattr(llm, "precision_args", lambda: calls.append(1) or dict(bf16=False, fp16=False))
    args = llm.sft_trainer(*chat_model, instructions.head(2), str(tmp_path), steps=1).args
    assert (calls, args.bf16, args.fp16) == ([1], False, False)

def test_chat_messages_puts_shots_before_the_request(instructions):
    shots = pick_shots(instructions, per_label=1, seed=1)
    msgs = chat_messages("q", shots=shots, system="s")
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * len(shots) + ["user"]
    assert msgs[-1]["content"] == "q" and sorted(shots.response) == sorted(set(instructions.response))


def test_parse_and_score():
    assert parse_label("NEUTRAL.") == "neutral" and parse_label("It is neutral") is None
    assert parse_label("sport", BBC_LABELS) == "sport"
    s = score_answers(["negative", "Positive!", "meh"], ["negative", "negative", "neutral"])
    assert s == {"accuracy": 1 / 3, "format": 2 / 3, "n": 3}


def test_corrupt_responses_changes_exactly_the_marked_share(instructions):
    noisy = corrupt_responses(instructions, 0.5, seed=2)
    assert noisy.corrupted.sum() == 15
    assert ((noisy.response != instructions.response) == noisy.corrupted).all()
    assert set(noisy.response) <= set(TWEET_LABELS) and "corrupted" not in instructions


def test_generate_is_greedy_and_batch_independent(chat_model):
    model, tok = chat_model
    prompts = ["What is the capital of France?", "Name a fruit that is yellow and grows on trees in hot countries."]
    lengths = [len(tok(format_prompt(tok, p))["input_ids"]) for p in prompts]
    assert lengths[0] != lengths[1]                         # so the batch really is padded
    together = generate(model, tok, prompts, max_new_tokens=6, batch_size=2)
    alone = [generate(model, tok, [p], max_new_tokens=6)[0] for p in prompts]
    assert together == alone                                # left padding does not change the answers
    assert generate(model, tok, prompts[:1], max_new_tokens=6, seed=123) == together[:1]  # greedy ignores the seed
    assert "paris" in together[0].lower()
    assert tok.padding_side == "right"


def test_response_nll_prefers_the_right_answer(chat_model):
    model, tok = chat_model
    q = GENERAL_QUESTIONS.prompt.iloc[0]
    nll = response_nll(model, tok, [q, q], ["The capital of France is Paris.", "The capital of France is Rome."])
    assert nll[0] < nll[1]
    import torch
    m = loss_mask(tok, q, "Paris.")  # by hand: next-token log-probs of the answer tokens only
    ids = torch.tensor([m.id.tolist()])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids.to(model.device)).logits[0, :-1].float().cpu(), -1)
    counted = torch.tensor(m.in_loss.tolist()[1:])
    manual = -logp[torch.arange(len(m) - 1), ids[0, 1:]][counted].mean()
    both = response_nll(model, tok, [q, q], ["Paris.", "The capital of France is Paris, a city on the river Seine."])
    assert both[0] == pytest.approx(float(manual), abs=1e-4)   # shifted by one, answer tokens only, pads left out


def test_lora_parameter_count_matches_the_formula(chat_model):
    model, _ = chat_model
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM
    targets = ("q_proj", "v_proj", "o_proj")
    with torch.device("meta"):  # a skeleton: no weights, no memory
        skeleton = AutoModelForCausalLM.from_config(model.config)
    peft_count = get_peft_model(skeleton, decoder_lora_config(2, targets)).get_nb_trainable_parameters()[0]
    assert lora_parameter_count(model, 2, targets) == peft_count     # the formula against what peft adds
    with pytest.raises(ValueError, match="r must be"):
        decoder_lora_config(0)


def test_format_prompt_ends_at_the_assistant_tag(chat_model):
    _, tok = chat_model
    assert format_prompt(tok, "hi").endswith("<|im_start|>assistant\n")


def _label_logprob_by_hand(model, tok, prompt, label):
    import torch
    p = tok(format_prompt(tok, prompt), add_special_tokens=False).input_ids
    ids = tok(label, add_special_tokens=False).input_ids
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=torch.tensor([p + ids[:-1]])).logits[0].float(), -1)
    return sum(lp[len(p) - 1 + t, i].item() for t, i in enumerate(ids))


def test_label_logprobs_match_a_plain_forward_pass_in_the_callers_order(chat_model, instructions):
    model, tok = chat_model
    prompts = instructions.prompt.iloc[[3, 0, 7, 1, 5]].tolist()  # lengths out of order: batches are sorted inside
    labels = ("positive", "Neutral")                                # one token and two tokens
    got = label_logprobs(model, tok, prompts, labels, batch_size=2)
    want = [[_label_logprob_by_hand(model, tok, p, l) for l in labels] for p in prompts]
    assert list(got.columns) == list(labels)
    assert abs(got.to_numpy() - pd.DataFrame(want).to_numpy()).max() < 1e-3


def test_rank_classify_answers_with_the_likeliest_label_in_either_case(chat_model, instructions):
    model, tok = chat_model
    few = instructions.head(6)
    scores, table = rank_classify(model, tok, few)
    assert list(table.index) == list(few.index) and table.answer.isin(TWEET_LABELS).all()
    lower = label_logprobs(model, tok, few.prompt, TWEET_LABELS)
    upper = label_logprobs(model, tok, few.prompt, [l.capitalize() for l in TWEET_LABELS])
    merged = pd.DataFrame(np.logaddexp(lower.to_numpy(), upper.to_numpy()), columns=list(TWEET_LABELS), index=few.index)
    assert (table.answer == merged.idxmax(axis=1)).all()                      # "Negative" counts for negative
    assert scores["accuracy"] == pytest.approx((table.answer == few.response).mean())
    with pytest.raises(ValueError, match="angry"):
        rank_classify(model, tok, few.assign(response="angry"))


def test_answer_token_nll_reads_every_answer_token_where_it_is_predicted(chat_model, instructions):
    model, tok = chat_model
    few = instructions.head(4)
    per_token = answer_token_nll(model, tok, few.prompt, few.response, batch_size=3)  # padding in the first batch
    assert per_token.groupby("row").size().tolist() == [int(loss_mask(tok, p, r).in_loss.sum()) for p, r in zip(few.prompt, few.response)]
    first = per_token.groupby("row").head(1)                                             # each answer's label token
    assert first.nll.to_numpy() == pytest.approx([-_label_logprob_by_hand(model, tok, p, r) for p, r in zip(few.prompt, few.response)], abs=1e-3)
