"""The pruned model inside the clients users already have: ``transformers`` pipelines, streamers,
``accelerate`` (``prepare`` and ``device_map="auto"`` loading). Tiny random Llama, a real
``PreTrainedTokenizerFast`` over a one-character-per-token vocabulary (ids < 128, left padding)."""

from __future__ import annotations

import logging
import threading
import warnings

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    PreTrainedTokenizerFast,
    TextIteratorStreamer,
    TextStreamer,
    pipeline,
)

from conftest import tiny_llama
from sdtp_adapter import SDTPConfig, get_sdtp_model

STAGES = dict(prune_layers=[2, 3, 5, 6], keep_ratio=0.7, protected_first=4, local_window_ratio=0.1)
LAYERS = 8
NEW = 8
LONG = "the quick brown fox jumps over the lazy dog " * 3  # 132 tokens
SHORT = "short prompt about dogs and cats, forty"        # 39 tokens


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A real fast tokenizer (what pipelines and streamers expect): one token per character, all 128
    ids of the tiny models used (so every generated id decodes), pad 0 / bos 1 / eos 2, left padding."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for i in range(4, 128):
        vocab[chr(0x20 + i - 4) if i < 99 else chr(0xC0 + i - 99)] = i  # printable ASCII, then Latin-1
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        padding_side="left",
    )


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


def pruned_tiny():
    sdtp = get_sdtp_model(tiny_llama(), SDTPConfig(**STAGES))
    sdtp.base_model.generation_config.pad_token_id = 0
    return sdtp


def greedy(sdtp, tokenizer, prompts: list[str]) -> torch.Tensor:
    """The new tokens of ``sdtp.generate`` on the left-padded batch ``prompts``."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = sdtp.generate(**enc, max_new_tokens=NEW, do_sample=False)
    return out[:, enc["input_ids"].shape[1]:]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def run_pipeline(pipe, prompts, **kwargs):
    """``pipe(prompts)`` returning (results, log messages of ``transformers`` and warnings raised)."""
    handler, logger = _Records(), logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = pipe(prompts, max_new_tokens=NEW, do_sample=False, return_tensors=True, **kwargs)
    finally:
        logger.removeHandler(handler)
    return out, handler.messages + [str(w.message) for w in caught]


def new_tokens(result: dict) -> list[int]:
    return result["generated_token_ids"][-NEW:]


# ---------------------------------------------------------------- pipelines
def test_pipeline_on_base_model_prunes_and_equals_generate(tokenizer):
    sdtp = pruned_tiny()
    handler, logger = _Records(), logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        pipe = pipeline("text-generation", model=sdtp.base_model, tokenizer=tokenizer)  # the hooks live on the base
    finally:
        logger.removeHandler(handler)
    out, messages = run_pipeline(pipe, LONG)
    record = sdtp.last_pruning  # the pipeline ran in this thread: its prefill's record is this thread's
    assert record is not None
    kept = record.kept_counts(LAYERS)
    assert kept[0] == 132 and kept[-1] < 132 and kept == sdtp.schedule.tokens_per_layer(132, LAYERS)
    assert new_tokens(out[0]) == greedy(sdtp, tokenizer, [LONG])[0].tolist()
    assert not [m for m in handler.messages + messages if "not supported" in m], handler.messages + messages

    with sdtp.disable_pruning():  # same thread as the pipeline call: reaches it
        unpruned, _ = run_pipeline(pipe, LONG)
    assert new_tokens(unpruned[0]) == greedy_unpruned(sdtp, tokenizer, [LONG])[0].tolist()
    assert new_tokens(unpruned[0]) != new_tokens(out[0])  # this seed: pruning changes the continuation


def greedy_unpruned(sdtp, tokenizer, prompts):
    with sdtp.disable_pruning():
        return greedy(sdtp, tokenizer, prompts)


def test_pipeline_batch_of_different_lengths_left_padded(tokenizer):
    sdtp = pruned_tiny()
    pipe = pipeline("text-generation", model=sdtp.base_model, tokenizer=tokenizer)
    out, messages = run_pipeline(pipe, [LONG, SHORT], batch_size=2)
    expected = greedy(sdtp, tokenizer, [LONG, SHORT])
    assert [new_tokens(r[0]) for r in out] == expected.tolist()
    record = sdtp.last_pruning
    assert record.kept_counts(LAYERS, row=0) == [132, 132, 93, 65, 65, 46, 32, 32]
    assert record.kept_counts(LAYERS, row=1)[-1] < 39  # the short row is pruned on its own length, padding excluded
    assert record.kept_counts(LAYERS, row=1) == sdtp.schedule.tokens_per_layer(39, LAYERS)
    # the batch gives each prompt what it gets alone
    assert expected[1].tolist() == greedy(sdtp, tokenizer, [SHORT])[0].tolist()
    assert not [m for m in messages if "not supported" in m]


def test_pipeline_on_the_wrapper_runs_but_transformers_warns(tokenizer):
    """Handing the ``SDTPModel`` itself works (generate is the base's), but transformers logs that the
    class is not supported for text-generation: that is why the docs hand it ``sdtp.base_model``."""
    sdtp = pruned_tiny()
    handler, logger = _Records(), logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        pipe = pipeline("text-generation", model=sdtp, tokenizer=tokenizer)
    finally:
        logger.removeHandler(handler)
    out, messages = run_pipeline(pipe, LONG)
    assert any("SDTPModel' is not supported for text-generation" in m for m in handler.messages + messages)
    assert new_tokens(out[0]) == greedy(sdtp, tokenizer, [LONG])[0].tolist()


# ---------------------------------------------------------------- streamers
def test_text_streamer_prints_the_pruned_generation(tokenizer, capsys):
    sdtp = pruned_tiny()
    enc = tokenizer([LONG], return_tensors="pt")
    capsys.readouterr()
    with torch.no_grad():
        out = sdtp.generate(**enc, max_new_tokens=NEW, do_sample=False, streamer=TextStreamer(tokenizer, skip_prompt=True))
    printed = capsys.readouterr().out
    assert printed.rstrip("\n") == tokenizer.decode(out[0, enc["input_ids"].shape[1]:])
    assert sdtp.last_pruning.kept_counts(LAYERS)[-1] < 132


def stream_in_thread(sdtp, tokenizer, prompt: str) -> tuple[str, dict]:
    """``TextIteratorStreamer`` as its docs show: generate in a background thread, read here."""
    enc = tokenizer([prompt], return_tensors="pt")
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
    seen = {}

    def work():
        with torch.no_grad():
            sdtp.generate(**enc, max_new_tokens=NEW, do_sample=False, streamer=streamer)
        seen["record"] = sdtp.last_pruning  # the generating thread's own record

    thread = threading.Thread(target=work)
    thread.start()
    text = "".join(streamer)
    thread.join()
    return text, seen


def test_text_iterator_streamer_in_a_thread_streams_the_pruned_generation(tokenizer):
    sdtp = pruned_tiny()
    text, seen = stream_in_thread(sdtp, tokenizer, LONG)
    assert sdtp.last_pruning is None  # records are per thread: the prefill ran in the worker
    assert seen["record"].kept_counts(LAYERS)[-1] < 132
    assert text == tokenizer.decode(greedy(sdtp, tokenizer, [LONG])[0])


def test_disable_pruning_in_the_caller_does_not_reach_the_streamer_thread(tokenizer):
    """The context managers are per thread: the worker started inside ``disable_pruning()`` still
    prunes. Enter the context manager inside the worker's function to change it."""
    sdtp = pruned_tiny()
    pruned = tokenizer.decode(greedy(sdtp, tokenizer, [LONG])[0])
    unpruned = tokenizer.decode(greedy_unpruned(sdtp, tokenizer, [LONG])[0])
    assert pruned != unpruned
    with sdtp.disable_pruning():
        text, seen = stream_in_thread(sdtp, tokenizer, LONG)
    assert text == pruned and seen["record"] is not None

    enc = tokenizer([LONG], return_tensors="pt")
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)

    def work():
        with sdtp.disable_pruning(), torch.no_grad():
            sdtp.generate(**enc, max_new_tokens=NEW, do_sample=False, streamer=streamer)

    thread = threading.Thread(target=work)
    thread.start()
    text = "".join(streamer)
    thread.join()
    assert text == unpruned


# ---------------------------------------------------------------- accelerate
def test_accelerator_prepare_keeps_pruning(tokenizer):
    from accelerate import Accelerator

    sdtp = pruned_tiny()
    ids = tokenizer([LONG], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reference = sdtp(ids).logits
    prepared = Accelerator(cpu=True).prepare(sdtp)
    with torch.no_grad():
        logits = prepared(ids).logits
    assert prepared.last_pruning.kept_counts(LAYERS) == [132, 132, 93, 65, 65, 46, 32, 32]
    assert torch.equal(logits, reference)
    with torch.no_grad():
        assert torch.equal(prepared.generate(ids, max_new_tokens=NEW, do_sample=False)[:, ids.shape[1]:],
                           greedy(sdtp, tokenizer, [LONG]))


def run_attached(base, ids: torch.Tensor) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Attach SDTP with seeded pruner weights (the same for every base) and return the kept counts,
    logits and greedy tokens of ``ids``."""
    sdtp = get_sdtp_model(base, SDTPConfig(**STAGES))
    assert all(p.device.type == "cpu" for p in sdtp.pruners.parameters())
    torch.manual_seed(5)
    for p in sdtp.pruners.parameters():
        torch.nn.init.normal_(p, std=0.5)
    with torch.no_grad():
        logits = sdtp(ids).logits
        generated = sdtp.generate(ids, max_new_tokens=NEW, do_sample=False)
    return sdtp.last_pruning.kept_counts(LAYERS), logits, generated


def assert_same_pruned_run(results: list) -> None:
    (kept_a, logits_a, gen_a), (kept_b, logits_b, gen_b) = results
    assert kept_a == kept_b and kept_b[-1] < 132
    assert torch.equal(logits_a, logits_b) and torch.equal(gen_a, gen_b)


def test_base_loaded_with_device_map_auto_prunes_like_a_plain_load(tokenizer, tmp_path):
    tiny_llama().save_pretrained(tmp_path)
    ids = tokenizer([LONG], return_tensors="pt")["input_ids"]
    results = []
    for kwargs in ({}, {"device_map": "auto"}):
        results.append(run_attached(AutoModelForCausalLM.from_pretrained(tmp_path, **kwargs).eval(), ids))
    assert_same_pruned_run(results)


@pytest.mark.parametrize("embed", ["cpu", "disk"])
def test_base_offloaded_with_accelerate_hooks_prunes_like_a_plain_load(tokenizer, tmp_path, embed):
    """A ``device_map`` that offloads half the layers (and maybe the embeddings) to disk: accelerate's
    ``AlignDevicesHook`` loads those weights at each forward, and the pruning hooks run alongside. With
    the embeddings offloaded the model's first parameter is on ``meta``; the pruning modules must still
    be created where the model computes (they were created on ``meta`` before)."""
    from accelerate.hooks import AlignDevicesHook

    tiny_llama().save_pretrained(tmp_path / "model")
    device_map = {"model.embed_tokens": embed, "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    device_map.update({f"model.layers.{i}": "cpu" if i < 4 else "disk" for i in range(LAYERS)})
    ids = tokenizer([LONG], return_tensors="pt")["input_ids"]
    results = []
    for kwargs in ({}, {"device_map": device_map, "offload_folder": str(tmp_path / "offload")}):
        base = AutoModelForCausalLM.from_pretrained(tmp_path / "model", **kwargs).eval()
        if kwargs:
            assert isinstance(getattr(base.model.layers[5], "_hf_hook", None), AlignDevicesHook)
        results.append(run_attached(base, ids))
    assert_same_pruned_run(results)
