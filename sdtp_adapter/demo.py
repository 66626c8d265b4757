"""``sdtp demo``: one long-document question, answered unpruned and with SDTP, then the prefill timed.

Every phase prints a step line first (loading, generating and timing take from seconds to minutes on
a CPU), and the total time is printed at the end.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import time

import torch

from .data.corpora import shakespeare_texts
from .data.tasks import retrieval_sample
from .hub import resolve_adapter
from .model import SDTPModel
from .timing import interleaved
from .zoo import DEFAULT_MODEL, MODELS, load_model, shipped_adapter

DEMO_SEED = 3
STEPS = 6


class Steps:
    """Numbered step lines with the seconds elapsed since the demo started."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, message: str) -> None:
        self.done += 1
        print(f"[{self.elapsed():6.1f}s] step {self.done}/{self.total}: {message}", flush=True)

    def note(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f}s]   {message}", flush=True)


def demo_sample(tokenizer, tokens: int = 3000) -> dict:
    """The demo's prompt: a ~``tokens``-token stretch of Hamlet (held out from training) with one inserted fact
    at 60% depth, then a question about it (a ``data.tasks.chat_sample``: ``answer`` is the inserted fact).
    ``sdtp explain --demo-prompt`` shows what pruning keeps of it."""
    return retrieval_sample(tokenizer, [shakespeare_texts("heldout")["hamlet"]], tokens, "needle", random.Random(DEMO_SEED), depth=0.6)


def demo(model_name: str = DEFAULT_MODEL, adapter: str | None = None, tokens: int = 3000,
         max_new_tokens: int = 24, repeats: int = 3) -> None:
    """Answer a question about a ~``tokens``-token document with and without pruning, then time the prefill."""
    if model_name not in MODELS:
        raise ValueError(f"model={model_name!r} is not packaged; available: {sorted(MODELS)}")
    # Resolve the adapter before loading anything, so that a wrong name or path fails in a second.
    folder = resolve_adapter(adapter) if adapter else shipped_adapter(model_name)
    step = Steps(STEPS)
    step(f"loading the base model {model_name}")  # a first run also prints the download and conversion steps
    model, tokenizer = load_model(model_name)
    step(f"attaching the adapter {folder}")
    sdtp = SDTPModel.from_pretrained(model, folder)
    step(f"building a ~{tokens}-token document from Hamlet")
    sample = demo_sample(tokenizer, tokens)
    prompt = torch.tensor([sample["input_ids"][: sample["prompt_length"]]])
    step.note(f"document: {prompt.shape[1]} tokens of Hamlet with one inserted fact; question: {sample['question']}")

    answers = {}
    for name, label, guard in (("base", "unpruned", sdtp.disable_pruning), ("sdtp", "SDTP", contextlib.nullcontext)):
        step(f"generating the {label} answer ({max_new_tokens} tokens)")
        with guard(), torch.inference_mode():
            out = sdtp.generate(prompt, max_new_tokens=max_new_tokens, do_sample=False)
        answers[name] = tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True).strip()
        step.note(f"answer ({label}): {answers[name]}")
    with torch.inference_mode():
        sdtp(prompt, logits_to_keep=1)
    counts = sdtp.last_pruning.kept_counts(sdtp.config.num_hidden_layers)

    def prefill(enabled: bool):
        def run():
            with (contextlib.nullcontext() if enabled else sdtp.disable_pruning()), torch.inference_mode():
                sdtp(prompt, logits_to_keep=1)

        return run

    step(f"timing the prefill, base and SDTP in turn: 1 warm-up + {repeats} timed round(s)")
    times = interleaved({"base": prefill(False), "sdtp": prefill(True)}, repeats, on_round=step.note)
    base_t, sdtp_t = statistics.median(times["base"]), statistics.median(times["sdtp"])
    print(f"answer (unpruned): {answers['base']}")
    print(f"answer (SDTP):     {answers['sdtp']}")
    print(f"expected:          {sample['answer']}")
    print(f"prefill, median of {repeats}: base {base_t:.2f}s, SDTP {sdtp_t:.2f}s, speedup {base_t / sdtp_t:.2f}x")
    stages = ", ".join(f"L{layer}:{counts[layer]}" for layer in sdtp.schedule.layers)
    print(f"tokens kept per stage (of {prompt.shape[1]}): {stages}")
    print(f"total time: {step.elapsed():.1f}s")
