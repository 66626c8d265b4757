"""``sdtp train``: any supported decoder checkpoint, the user's own data, one process or many.

The options are generated from the dataclasses they fill: every ``SDTPConfig`` field (adapter shape,
loss weights) and every ``TrainingArguments`` field is a flag with that field's help, so the CLI and
the Python API cannot drift. Only the config and argument modules are imported to build the parser
(no torch), so ``sdtp --help`` stays fast.

    sdtp train --model ./my-qwen2 --dataset chats.jsonl --output-dir my-adapter --steps 200
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m sdtp_adapter.cli train ...
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from pathlib import Path

from ..config import SDTPConfig
from .arguments import TrainingArguments

# SDTPConfig fields filled in from the base model or by the library, never by the user
CONFIG_SKIP = {"base_model_name_or_path", "num_hidden_layers", "hidden_size", "adapter_type", "format_version", "library_version"}
ARGS_SKIP = {"output_dir"}  # a required option of its own
INIT_HELP = ("start from a trained adapter (folder, shipped adapter name or Hub id) instead of fresh modules: its "
             "weights replace them, to fine-tune it on this data (e.g. --phases mark,joint); the stage layers and "
             "pruner width must match it")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_field(group, f, shown_default=MISSING) -> None:
    """One option for dataclass field ``f`` (annotations are strings: ``from __future__ import annotations``).
    Left out, the option is absent from the namespace, so the dataclass's own default applies."""
    kind = str(f.type).replace(" ", "")
    options: dict = {"dest": f.name, "help": f.metadata.get("help", ""), "default": argparse.SUPPRESS}
    default = shown_default if shown_default is not MISSING else f.default if f.default is not MISSING else None
    if kind.startswith("bool"):
        options["action"] = argparse.BooleanOptionalAction
    elif kind.startswith("list[int]"):
        options.update(type=int, nargs="+", metavar="L")
    elif kind.startswith("tuple[str"):
        options.update(type=str, metavar="A,B")
        default = ",".join(default) if default else default
    elif kind.startswith("int"):
        options.update(type=int, metavar="N")
    elif kind.startswith("float"):
        options.update(type=float, metavar="X")
    else:
        options.update(type=str, metavar="S")
    options["help"] = (options["help"] + f" (default: {default})").replace("%", "%%")  # argparse formats help with %
    group.add_argument(_flag(f.name), **options)


def add_parser(sub) -> None:
    """Add ``train`` to the ``sdtp`` subparsers ``sub``."""
    p = sub.add_parser(
        "train",
        help="train an adapter for any supported model on your own data (one or many processes, resumable)",
        description="Train SDTP pruning modules for a base model on a dataset: token marking (saliency), warm "
        "start, then joint training under simulated pruning; the base model stays frozen. Run it under "
        "`accelerate launch` for several processes (docs/training.md).",
    )
    m = p.add_argument_group("base model")
    m.add_argument("--model", required=True, metavar="NAME_OR_PATH", help="packaged name, local transformers folder or Hub id")
    m.add_argument("--revision", default=None, metavar="R", help="Hub branch, tag or commit of --model (default: main)")
    m.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"], help="weights dtype")
    m.add_argument("--load-in-4bit", action="store_true", help="quantise the base to bitsandbytes NF4 (frozen)")
    m.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager"], help="attention kernel")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", required=True, metavar="SOURCE",
                   help="a .txt/.jsonl/.json/.parquet/.csv file, a folder (save_to_disk or data files) or a datasets Hub name")
    d.add_argument("--dataset-config", default=None, metavar="C", help="dataset configuration name (Hub datasets; default: none)")
    d.add_argument("--split", default="train", help="dataset split")
    d.add_argument("--text-column", default=None, metavar="COL",
                   help="column of plain text (default: 'messages' for chats if present, else 'text')")
    d.add_argument("--messages-column", default="messages", metavar="COL", help="column of chat messages (role/content lists)")
    d.add_argument("--max-length", type=int, default=2048, metavar="N", help="tokens per sample (texts are packed into windows of this size)")
    d.add_argument("--no-packing", dest="packing", action="store_false", help="one sample per text, truncated, instead of packed windows")
    d.add_argument("--max-samples", type=int, default=None, metavar="N", help="use only the first N samples (default: all)")
    c = p.add_argument_group("adapter (SDTPConfig; --config sets them from a file, flags override it)")
    c.add_argument("--config", default=None, metavar="FILE_OR_DIR",
                   help="adapter_config.json, or a folder holding one (default: --init-adapter's, else none)")
    c.add_argument("--init-adapter", default=None, metavar="NAME_OR_PATH", help=INIT_HELP)
    add_dataclass_flags(c, SDTPConfig, CONFIG_SKIP)
    t = p.add_argument_group("training (TrainingArguments)")
    t.add_argument("--output-dir", required=True, metavar="DIR", help=TrainingArguments.__dataclass_fields__["output_dir"].metadata["help"])
    add_dataclass_flags(t, TrainingArguments, ARGS_SKIP)


def add_dataclass_flags(group, cls, skip: set[str], defaults: dict | None = None) -> None:
    """One flag per field of dataclass ``cls`` except ``skip``; ``defaults`` only changes the help's
    "(default: ...)" for callers such as ``recipes/train.py`` that apply their own defaults."""
    for f in fields(cls):
        if f.name not in skip:
            _add_field(group, f, (defaults or {}).get(f.name, MISSING))


def config_from_args(args: argparse.Namespace, model_name: str, init_dir: Path | None = None) -> SDTPConfig:
    """``SDTPConfig`` from ``--config`` (if given; else ``init_dir``'s, the ``--init-adapter`` folder) overridden
    by the explicit config flags. With ``init_dir``, the result must have its module shapes (``check_init_shape``)."""
    data: dict = {}
    if args.config is not None or init_dir is not None:
        path = Path(args.config).expanduser() if args.config is not None else init_dir
        if not path.is_dir() and path.name != "adapter_config.json":
            raise ValueError(f"--config={args.config!r} is invalid; allowed: an adapter_config.json file or a folder holding one")
        data = SDTPConfig.from_pretrained(path if path.is_dir() else path.parent).to_dict()
        for name in CONFIG_SKIP:  # the base model and this library fill these in
            data.pop(name, None)
    for f in fields(SDTPConfig):
        if f.name not in CONFIG_SKIP and hasattr(args, f.name):
            data[f.name] = getattr(args, f.name)
    data["base_model_name_or_path"] = model_name
    config = SDTPConfig.from_dict(data)
    if init_dir is not None:
        check_init_shape(config, init_dir)
    return config


def init_adapter_dir(source: str | None) -> Path | None:
    """The folder of ``--init-adapter`` (a local folder, a shipped adapter name or a Hub id, downloaded), or None.

    Raises:
        FileNotFoundError: ``source`` is none of these (the message lists the shipped names).
    """
    if source is None:
        return None
    from ..hub import resolve_adapter

    return Path(resolve_adapter(source))


def check_init_shape(config: SDTPConfig, init_dir: Path) -> None:
    """Refuse a run whose modules would not have the ``--init-adapter`` weights' stage layers or width.

    The layers are compared as resolved on the adapter's model depth, so ``prune_layers`` and the equivalent
    ``num_stages`` / ``first_layer`` / ``layer_step`` agree; another base model is caught when the weights load.
    """
    saved = SDTPConfig.from_pretrained(init_dir)
    depth = saved.num_hidden_layers
    ours, theirs = config.resolve_layers(depth), saved.resolve_layers(depth)
    differing = []
    if ours != theirs:
        differing.append(f"stage layers {ours} (adapter: {theirs})")
    if config.pruner_hidden_size != saved.pruner_hidden_size:
        differing.append(f"pruner_hidden_size={config.pruner_hidden_size} (adapter: {saved.pruner_hidden_size})")
    if differing:
        raise ValueError(
            f"--init-adapter {str(init_dir)!r} does not fit this run: {'; '.join(differing)}. Its weights need the same "
            "stages and pruner width: drop the flags that change them (or train fresh modules without --init-adapter)"
        )


def start_from_adapter(sdtp, init_dir: Path) -> None:
    """Load the ``--init-adapter`` weights into ``sdtp``'s fresh modules (names and shapes checked)."""
    from ..persistence import load_adapter

    _, weights = load_adapter(init_dir)
    sdtp.load_pruner_weights(weights, f"--init-adapter {str(init_dir)!r} does not fit this model's modules (trained for another base model?)")


def given_fields(args: argparse.Namespace, cls) -> dict:
    """``{field: value}`` of the dataclass ``cls`` fields whose flags were given (absent flags leave no attribute)."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}


def training_args_from(args: argparse.Namespace) -> TrainingArguments:
    """``TrainingArguments`` from the flags given (``--output-dir`` is required; the others may be absent)."""
    return TrainingArguments(**given_fields(args, TrainingArguments))


def run(args: argparse.Namespace) -> None:
    """Check every option, the output folder and the data's columns, then load the model and train
    (prints on the main process only)."""
    training_args = training_args_from(args)  # bad flags fail before anything loads
    init_dir = init_adapter_dir(args.init_adapter)
    config = config_from_args(args, args.model, init_dir)
    if args.max_length < 2:
        raise ValueError(f"--max-length={args.max_length} is invalid; allowed: an integer >= 2")
    if args.max_samples is not None and args.max_samples < 1:
        raise ValueError(f"--max-samples={args.max_samples} is invalid; allowed: an integer >= 1")
    import torch

    from .. import get_sdtp_model
    from ..data.sources import load_rows
    from ..loading import load_base
    from .checks import min_trainable_length
    from .samples import build_samples, describe, pick_column
    from .trainer import make_accelerator, refuse_earlier_run, train

    if training_args.resume_from_checkpoint is None:
        refuse_earlier_run(Path(training_args.output_dir), training_args)
    accelerator = make_accelerator(training_args)
    say = accelerator.print
    rows = load_rows(args.dataset, config=args.dataset_config, split=args.split)
    pick_column(list(rows.column_names), args.text_column, args.messages_column)
    model, tokenizer = load_base(args.model, revision=args.revision, dtype=args.dtype, load_in_4bit=args.load_in_4bit,
                                 attn_implementation=args.attn_implementation)
    config.base_model_name_or_path = model.name_or_path  # what loading recorded (a packaged model: its Hub id)
    say(f"model: {args.model} ({model.config.model_type})")
    with torch.random.fork_rng(devices=[]):  # the modules' initial weights follow --seed: every process starts alike
        torch.manual_seed(training_args.seed)
        sdtp = get_sdtp_model(model, config)
    if init_dir is not None:
        start_from_adapter(sdtp, init_dir)
        say(f"modules start from {init_dir}")
    samples = build_samples(rows, tokenizer, max_length=args.max_length, text_column=args.text_column,
                            messages_column=args.messages_column, packing=args.packing, tail_ratio=config.saliency_tail_ratio,
                            min_length=min(args.max_length, min_trainable_length(sdtp.schedule)))
    if args.max_samples is not None:
        samples = samples.select(range(min(args.max_samples, len(samples))))
    say(f"data: {args.dataset}: {describe(samples)}")
    if accelerator.is_main_process:
        sdtp.print_trainable_parameters()
    result = train(sdtp, samples, training_args, accelerator)
    if result.joint:
        seconds = sum(h["seconds"] for h in result.joint)
        say(f"joint phase: {len(result.joint)} steps, {sum(h['samples'] for h in result.joint) / seconds:.2f} samples/s")
    marking = training_args.marking_dir or result.output_dir / "marking"
    say(f"adapter written to {result.output_dir}" if result.files else f"marking written to {marking}")
