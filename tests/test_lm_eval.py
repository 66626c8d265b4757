"""The pruned model inside lm-eval's ``HFLM`` (issue 13): ``HFLM(pretrained=sdtp.base_model, ...)`` on a
local ``multiple_choice`` (loglikelihood) task and a local ``generate_until`` task, both written here
(task YAML + jsonl in a temp folder, loaded with ``TaskManager(include_path=...)``; no network).
Tiny random Llama, a real fast tokenizer with one token per character, prompts of ~400 tokens so that
every stage prunes. About 10 s, most of it importing lm-eval."""

from __future__ import annotations

import json

import lm_eval  # `.[dev]` installs it (`.[eval]` alone for users)
import pytest
import torch
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from conftest import tiny_llama
from own_model import STAGES, char_tokenizer
from sdtp_adapter import SDTPConfig, get_sdtp_model

LAYERS = 8
NEW = 8
SENTENCES = ["the quick brown fox jumps over the lazy dog\n", "a keeper logs the weather every hour\n",
             "some rivers run north and some run south\n"]
DOCS = [
    dict(context=sentence * 9 + f"record {i}: the colour is {colour}.", question="what is the colour?",
         choices=["red", "blue", "green"], answer=i)
    for i, (sentence, colour) in enumerate(zip(SENTENCES, ["red", "blue", "green"]))
]
COMMON = """dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
doc_to_text: "{{{{context}}}}\\nQuestion: {{{{question}}}}\\nAnswer:"
"""
CHOICE = """task: sdtp_choice
output_type: multiple_choice
doc_to_choice: "{{choices}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""
GEN = f"""task: sdtp_gen
output_type: generate_until
doc_to_target: "{{{{choices[answer]}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: {NEW}
  do_sample: false
metric_list:
  - metric: exact_match
"""


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> TaskManager:
    root = tmp_path_factory.mktemp("lm_eval_tasks")
    data = root / "docs.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in DOCS))
    common = COMMON.format(data=data, cache=root / "cache")
    (root / "sdtp_choice.yaml").write_text(CHOICE + common)
    (root / "sdtp_gen.yaml").write_text(GEN + common)
    return TaskManager(include_path=str(root), include_defaults=False)  # not the ~10k built-in task files


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="module")
def sdtp():
    return get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES))


class Prefills:
    """Records, for every forward of the base model on more than one token, the prompt length, the
    tokens entering the last decoder layer, and the kept counts of the pruning record it left (None
    when that forward left no new record, i.e. it was not pruned)."""

    def __init__(self, sdtp):
        self.sdtp, self.rows, self._last_record, self._entering = sdtp, [], sdtp.last_pruning, None
        base = sdtp.base_model
        self._handles = [
            base.model.layers[-1].register_forward_pre_hook(self._before_last_layer, with_kwargs=True),
            base.register_forward_hook(self._after_model, with_kwargs=True),
        ]

    def _before_last_layer(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        self._entering = hidden.shape[1]

    def _after_model(self, module, args, kwargs, output):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        record = self.sdtp.last_pruning
        new = record is not None and record is not self._last_record
        self._last_record = record
        if ids.shape[1] > 1:
            kept = record.kept_counts(num_layers=LAYERS) if new else None
            self.rows.append((ids.shape[1], self._entering, kept))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()


def evaluate(model, tokenizer, tasks, task: str) -> list[dict]:
    """``simple_evaluate`` of ``model`` (a ``PreTrainedModel``) inside ``HFLM``: the samples, by doc id."""
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
    out = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=tasks, log_samples=True, num_fewshot=0)
    return sorted(out["samples"][task], key=lambda sample: sample["doc_id"])


def loglikelihoods(samples: list[dict]) -> torch.Tensor:
    return torch.tensor([[ll for ll, _ in sample["filtered_resps"]] for sample in samples], dtype=torch.float64)


def test_loglikelihood_task_is_pruned_and_disable_pruning_gives_the_base_scores(sdtp, tokenizer, tasks):
    with Prefills(sdtp) as pruned_run:
        pruned = loglikelihoods(evaluate(sdtp.base_model, tokenizer, tasks, "sdtp_choice"))
    # one prefill per (doc, choice), each pruned: every stage cut the prompt, the last layer saw the rest
    assert len(pruned_run.rows) == len(DOCS) * 3, pruned_run.rows
    for length, entering, kept in pruned_run.rows:
        assert length > 350 and kept is not None, pruned_run.rows
        assert kept[:2] == [length, length] and kept[-1] == entering < length // 4, (length, entering, kept)
        assert kept[2] < length and kept[4] < kept[2] and kept[6] < kept[4], kept

    with Prefills(sdtp) as unpruned_run, sdtp.disable_pruning():
        unpruned = loglikelihoods(evaluate(sdtp.base_model, tokenizer, tasks, "sdtp_choice"))
    assert [(entering, kept) for length, entering, kept in unpruned_run.rows] == [(length, None) for length, _, _ in unpruned_run.rows]

    plain = loglikelihoods(evaluate(tiny_llama(), tokenizer, tasks, "sdtp_choice"))  # same weights, no SDTP
    assert torch.equal(unpruned, plain), (unpruned - plain).abs().max()
    assert (pruned - plain).abs().max() > 1e-3, (pruned, plain)


def test_generate_until_task_gives_the_text_of_pruned_generate(sdtp, tokenizer, tasks):
    with Prefills(sdtp) as run:
        samples = evaluate(sdtp.base_model, tokenizer, tasks, "sdtp_gen")
    assert len(run.rows) == len(DOCS) and all(kept is not None and kept[-1] < length // 4 for length, _, kept in run.rows)

    texts = [sample["filtered_resps"][0] for sample in samples]
    for sample, text in zip(samples, texts):
        prompt, kwargs = sample["arguments"][0]
        assert kwargs["until"] == ["\n"] and kwargs["max_gen_toks"] == NEW
        enc = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = sdtp.generate(**enc, max_new_tokens=NEW, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert sdtp.last_pruning.kept_counts(num_layers=LAYERS)[-1] < enc["input_ids"].shape[1] // 4
        expected = tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).split("\n")[0]
        assert text == expected, (text, expected)
    assert len(set(texts)) > 1, texts  # the three prompts really give different generations
