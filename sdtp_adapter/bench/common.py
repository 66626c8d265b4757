"""Inputs the sections share: the model with its adapter, and the text that windows and prompts are cut from.

``--model`` takes the three forms of ``loading.load_base`` (a packaged name, a local transformers
folder, a Hub id); only a packaged model has a shipped adapter, so any other needs ``--adapter``.
The text is the held-out Shakespeare plays (never trained on), or the user's own through
``--text-file`` / ``--dataset`` (``UserText``) on the sections that take them (``speed``, ``compare``).
"""

from __future__ import annotations

import argparse
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.corpora import shakespeare_texts
from ..model import SDTPModel
from ..zoo import DEFAULT_MODEL, MODELS, SHIPPED_ADAPTERS
from .fidelity import text_windows

FILLER_WORDS = 16  # words per line of the user's text used as task filler (Shakespeare's lines are ~8)


# ---------------------------------------------------------------------------------------------- model
ADAPTER_HELP = "adapter folder, shipped adapter name or Hub id"


def add_model_arguments(parser: argparse.ArgumentParser, adapter_help: str = ADAPTER_HELP) -> None:
    """``--model``, ``--revision`` and ``--adapter`` (``adapter_help``: what the section uses it for)."""
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, metavar="NAME_OR_PATH",
        help=f"base model: a packaged name ({', '.join(sorted(MODELS))}), a local transformers folder or a Hub id",
    )
    add_revision_argument(parser)
    parser.add_argument(
        "--adapter", default=None, metavar="NAME_OR_PATH",
        help=f"{adapter_help} (default: the shipped adapter of a packaged --model; required for any other --model)",
    )


def add_revision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--revision", default=None, metavar="R",
        help="Hub branch, tag or commit of --model, Hub ids only (default: the main branch)",
    )


def adapter_source(model: str, adapter: str | None) -> str | Path:
    """What to attach to ``model``: ``adapter`` if given, else the packaged model's shipped adapter.

    Raises:
        ValueError: ``model`` is not packaged and no ``adapter`` is given (no shipped adapter fits it).
    """
    if adapter:
        return adapter
    if model in MODELS:
        return SHIPPED_ADAPTERS / model
    raise ValueError(
        f"--model {model!r} is not a packaged model ({', '.join(sorted(MODELS))}), so no shipped adapter fits it: "
        "pass --adapter (an adapter folder, shipped adapter name or Hub id trained for this model; `sdtp train` makes one)"
    )


def load_sdtp(
    model: str, adapter: str | None = None, revision: str | None = None, dtype: str = "float32"
) -> tuple[SDTPModel, object]:
    """``(SDTPModel with the adapter attached, tokenizer)`` for ``model`` in any ``--model`` form (sdpa).

    The adapter is checked for before the model loads, so a missing ``--adapter`` fails at once.
    """
    from ..loading import load_base

    source = adapter_source(model, adapter)
    base, tokenizer = load_base(model, revision=revision, dtype=dtype)
    return SDTPModel.from_pretrained(base, source), tokenizer


def model_label(model: str) -> str:
    """A file-name-safe name of ``--model`` for result files (``speed-<label>.json``).

    A packaged (or shape) name stays as it is; a folder or Hub id gives its last component with every
    character outside ``[A-Za-z0-9._-]`` replaced by ``-`` (``~/models/My Llama/`` -> ``My-Llama``).
    """
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", model):
        return model
    expanded = os.path.expanduser(model.rstrip("/\\")) or model
    last = Path(expanded).resolve().name if Path(expanded).is_dir() else re.split(r"[/\\]", expanded)[-1]
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", last).strip(".-")
    return label or "model"


# ---------------------------------------------------------------------------------------------- text
def add_text_arguments(parser: argparse.ArgumentParser) -> None:
    """``--text-file`` / ``--dataset`` (+ its config, split and column): the user's own text."""
    parser.add_argument(
        "--text-file", default=None, metavar="PATH",
        help="plain-text file whose text replaces the held-out Shakespeare plays (default: the plays)",
    )
    parser.add_argument(
        "--dataset", default=None, metavar="SOURCE",
        help="a datasets Hub name, a saved dataset folder or a .jsonl/.json/.parquet/.csv/.txt file whose rows "
        "(joined by blank lines) replace the held-out plays (default: the plays)",
    )
    parser.add_argument(
        "--dataset-config", default=None, metavar="NAME",
        help="configuration of a --dataset with several (default: its only one)",
    )
    parser.add_argument("--split", default="train", help="split of --dataset (Hub datasets also take slices: 'train[:2000]')")
    parser.add_argument("--text-column", default="text", metavar="COLUMN", help="column of --dataset holding the text")


@dataclass(frozen=True)
class UserText:
    """The user's own text, as one document (a dataset's rows joined by blank lines).

    Attributes:
        source: how the user named it (``--text-file notes.txt``), for results and errors.
        text: the whole text.
    """

    source: str
    text: str
    _ids: dict = field(default_factory=dict, compare=False, repr=False)  # tokenizer id -> token ids

    def token_ids(self, tokenizer) -> list[int]:
        """The text's token ids (no special tokens), tokenized once per tokenizer."""
        key = id(tokenizer)
        if key not in self._ids:
            self._ids[key] = tokenizer(self.text, add_special_tokens=False)["input_ids"]
        return self._ids[key]

    def check_length(self, tokenizer, length: int, needed: int | None = None) -> list[int]:
        """The token ids, if there are at least ``needed`` (default ``length``) of them.

        Raises:
            ValueError: too few tokens; names ``length`` and the tokens available.
        """
        ids = self.token_ids(tokenizer)
        needed = length if needed is None else needed
        if len(ids) < needed:
            raise ValueError(
                f"length={length} tokens needs at least {needed} tokens of text, but {self.source} has only "
                f"{len(ids)} tokens; pass a longer text or smaller lengths"
            )
        return ids


def read_user_text(args: argparse.Namespace) -> UserText | None:
    """The text of ``--text-file`` or ``--dataset`` in ``args`` (None: neither given, use the held-out plays).

    Raises:
        ValueError: both given, or the text is empty. FileNotFoundError: a missing file or dataset.
    """
    text_file, dataset = getattr(args, "text_file", None), getattr(args, "dataset", None)
    if text_file and dataset:
        raise ValueError(f"--text-file {text_file!r} and --dataset {dataset!r} are alternatives; pass one of them")
    if text_file:
        path = Path(os.path.expanduser(text_file))
        if not path.is_file():
            raise FileNotFoundError(f"--text-file {text_file!r} is not a file (relative paths start from {os.getcwd()!r})")
        text = path.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            raise ValueError(f"--text-file {text_file!r} is empty: it needs prose to cut windows from")
        return UserText(f"--text-file {text_file}", text)
    if dataset:
        from ..data.sources import load_rows, texts_of

        rows = load_rows(dataset, config=getattr(args, "dataset_config", None), split=getattr(args, "split", "train"))
        column = getattr(args, "text_column", "text")
        return UserText(f"--dataset {dataset} (split {getattr(args, 'split', 'train')}, column {column})",
                        "\n\n".join(texts_of(rows, column)))
    return None


def describe_text(text: UserText | None) -> str:
    """What the windows and prompts were cut from, for results."""
    return "held-out Shakespeare plays" if text is None else text.source


def heldout_windows(tokenizer, count: int, length: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` ``[1, length]`` windows of the held-out plays (never trained on); same for every section."""
    return text_windows(tokenizer, list(shakespeare_texts("heldout").values()), count, length, seed=seed)


def heldout_ids(tokenizer, length: int) -> torch.Tensor:
    """``[1, length]`` tokens of the held-out plays from their start (speed runs)."""
    ids = tokenizer("\n\n".join(shakespeare_texts("heldout").values()), add_special_tokens=False)["input_ids"]
    if length > len(ids):
        raise ValueError(f"length={length}: the held-out text has only {len(ids)} tokens")
    return torch.tensor([ids[:length]])


def prose_windows(tokenizer, count: int, length: int, text: UserText | None = None, seed: int = 0) -> list[torch.Tensor]:
    """``count`` ``[1, length]`` windows at random offsets of ``text`` (None: the held-out plays)."""
    if text is None:
        return heldout_windows(tokenizer, count, length, seed)
    # one token more than a window, as text_windows asks, so that its start has a choice
    ids = text.check_length(tokenizer, length, needed=length + 1)
    rng = random.Random(seed)
    starts = [rng.randrange(0, len(ids) - length) for _ in range(count)]
    return [torch.tensor([ids[start : start + length]]) for start in starts]


def prose_ids(tokenizer, length: int, text: UserText | None = None) -> torch.Tensor:
    """``[1, length]`` tokens of ``text`` (None: the held-out plays) from its start."""
    if text is None:
        return heldout_ids(tokenizer, length)
    return torch.tensor([text.check_length(tokenizer, length)[:length]])


def filler_texts(tokenizer, length: int, text: UserText | None = None) -> list[str]:
    """The prose the long-context tasks hide their facts in, checked to fill a ``length``-token prompt."""
    if text is None:
        return list(shakespeare_texts("heldout").values())
    text.check_length(tokenizer, length)
    # the task builder (data.tasks.filler) takes whole lines until the prompt is long enough: a long
    # paragraph as one line would overshoot it, so the text is re-wrapped into short lines
    lines = []
    for paragraph in text.text.splitlines():
        words = paragraph.split()
        lines += [" ".join(words[i : i + FILLER_WORDS]) for i in range(0, len(words), FILLER_WORDS)]
    return ["\n".join(lines)]
