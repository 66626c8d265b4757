"""``sdtp explain``: draw which tokens of one prompt survive each stage (explain.png, explain.html, explain.json).

Light on import: the options that need ``bench.common`` (which imports torch) are added only when the
command line names ``explain`` (``add_parser(full=True)``), as ``sdtp bench`` does for its sections.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_OUT = "sdtp-explain"  # relative: under the directory the command runs in, never the package tree
DEFAULT_MAX_TOKENS = 8192
FILES = ("explain.json", "explain.png", "explain.html")


def add_parser(sub, full: bool = True) -> argparse.ArgumentParser:
    """Add ``explain`` to the ``sdtp`` subparsers ``sub``; ``full=False`` adds its help line only."""
    parser = sub.add_parser(
        "explain", help=f"draw which tokens of one prompt survive each stage (PNG, HTML, JSON in ./{DEFAULT_OUT}/)",
        description="Run one pruned prefill of one prompt and write, into --out DIR, explain.png (stage x token "
        "heatmap of kept tokens and scores), explain.html (the prompt shaded by the last layer each token reached, "
        "per-stage kept counts and score distributions; self-contained) and explain.json (the data). The prompt "
        "is --text-file's text followed by --prompt (either may be left out), or the demo's prompt (--demo-prompt).",
    )
    if not full:
        return parser
    from ..bench.common import add_model_arguments

    add_model_arguments(parser, adapter_help="adapter whose stages are explained")
    parser.add_argument("--text-file", default=None, metavar="PATH", help="plain-text (UTF-8) file holding the prompt's text (default: none)")
    parser.add_argument("--prompt", default=None, metavar="TEXT",
                        help="prompt text, appended after --text-file's text (a blank line between) when both are given (default: none)")
    parser.add_argument("--demo-prompt", action="store_true",
                        help="explain the prompt of `sdtp demo` (Hamlet with one inserted fact, and a question); "
                        "the fact is highlighted")
    parser.add_argument("--tokens", type=_positive_int, default=3000, help="approximate document length of --demo-prompt")
    parser.add_argument("--chat", action="store_true",
                        help="wrap the text in the tokenizer's chat template as one user turn (with the generation prompt)")
    parser.add_argument("--highlight", default=None, metavar="TEXT",
                        help="mark the tokens of TEXT's first occurrence in the prompt and report whether they survive "
                        "(default with --demo-prompt: the inserted fact)")
    parser.add_argument("--max-tokens", type=_positive_int, default=DEFAULT_MAX_TOKENS,
                        help="refuse longer prompts (one HTML span per token)")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"folder for {', '.join(FILES)}, relative to the current directory (default: %(default)s)")
    return parser


def _positive_int(text: str) -> int:
    from ..cli import positive_int  # one rule for every integer option

    return positive_int(text)


def read_prompt(text_file: str | None, prompt: str | None) -> str:
    """The prompt text: the file's text, then ``prompt`` after a blank line.

    Raises:
        ValueError: neither is given, or the text is empty.
        FileNotFoundError: ``text_file`` does not exist.
    """
    if text_file is None and prompt is None:
        raise ValueError("no prompt: pass --text-file PATH, --prompt TEXT (or both), or --demo-prompt")
    parts = []
    if text_file is not None:
        path = Path(os.path.expanduser(text_file))
        if not path.is_file():
            raise FileNotFoundError(f"--text-file {text_file!r} is not a file")
        parts.append(path.read_text(encoding="utf-8"))
    if prompt is not None:
        parts.append(prompt)
    text = "\n\n".join(parts)
    if not text.strip():
        raise ValueError("the prompt is empty: --text-file and --prompt hold no text")
    return text


def prompt_ids(tokenizer, text: str, chat: bool) -> list[int]:
    """``text``'s token ids: as one chat user turn (``chat``), else plain with the tokenizer's special tokens."""
    if not chat:
        return list(tokenizer(text)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("--chat needs a tokenizer with a chat template; this model's tokenizer has none (leave out --chat)")
    from ..data.tasks import template_ids

    return template_ids(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True))


def run(args: argparse.Namespace) -> None:
    """``sdtp explain``: load, explain, write the three files, print a summary."""
    if args.demo_prompt and (args.text_file is not None or args.prompt is not None or args.chat):
        raise ValueError("--demo-prompt is a whole prompt (in the chat template): leave out --text-file, --prompt and --chat")
    text = None if args.demo_prompt else read_prompt(args.text_file, args.prompt)  # fails before the model loads
    out = Path(os.path.expanduser(args.out))
    import torch

    from ..bench.common import load_sdtp
    from .html import write_html
    from .png import render_png

    sdtp, tokenizer = load_sdtp(args.model, args.adapter, args.revision)
    highlight = args.highlight
    if args.demo_prompt:
        from ..demo import demo_sample

        sample = demo_sample(tokenizer, args.tokens)
        ids, source = sample["input_ids"][: sample["prompt_length"]], f"the demo's prompt (--tokens {args.tokens})"
        highlight = sample["answer"] if highlight is None else highlight  # the needle task's answer is the fact
    else:
        ids = prompt_ids(tokenizer, text, args.chat)
        source = " + ".join(x for x in (args.text_file and f"--text-file {args.text_file}", args.prompt and "--prompt") if x)
    if len(ids) > args.max_tokens:
        raise ValueError(f"the prompt has {len(ids)} tokens, more than --max-tokens {args.max_tokens}; "
                         "pass a shorter text or raise --max-tokens")
    explanation = sdtp.explain(torch.tensor([ids]), tokenizer=tokenizer)
    if highlight:
        explanation.highlight, explanation.highlight_text = explanation.find_text(highlight), highlight
    explanation.meta.update(model=args.model, adapter=str(args.adapter or "shipped"), source=source,
                            chat=bool(args.chat or args.demo_prompt))
    out.mkdir(parents=True, exist_ok=True)
    explanation.save_json(out / "explain.json")
    render_png(explanation, out / "explain.png")
    write_html(explanation, out / "explain.html")
    print(f"{explanation.length} tokens; kept per stage: "
          + ", ".join(f"L{layer} {n}" for layer, n in zip(explanation.stage_layers, explanation.kept_counts)))
    if explanation.highlight:
        left = explanation.surviving(explanation.highlight)
        print(f"highlight ({len(explanation.highlight)} tokens) left after each stage: "
              + ", ".join(f"L{layer} {n}" for layer, n in zip(explanation.stage_layers, left)))
    for name in FILES:
        print(f"wrote {out / name}")
