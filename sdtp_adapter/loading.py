"""Load a base model named the three ways a user names one: a packaged name, a local folder, a Hub id.

``sdtp train`` and ``sdtp bench`` take the same ``--model`` forms through ``load_base``; loading
itself is transformers' own ``AutoModelForCausalLM.from_pretrained`` (revision, dtype, bitsandbytes
NF4, attention implementation), and the model family is checked before any long work starts.
"""

from __future__ import annotations

import os
from pathlib import Path

DTYPES = ("float32", "bfloat16", "float16", "auto")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


def resolve_model(name_or_path: str) -> tuple[str, str]:
    """``(where to load from, the name the model records)`` for ``name_or_path``.

    A packaged name (``zoo.MODELS``) loads from its converted cache folder (fetched on first use) and
    records its upstream Hub id; a local folder loads as is; anything else is a Hub id.

    Raises:
        FileNotFoundError: a path-like name (``./x``, ``/x``, ``~/x``, or more than one ``/``) that is not a folder.
    """
    from .zoo import MODELS, model_path

    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ValueError(f"model={name_or_path!r} is invalid: expected a packaged name {sorted(MODELS)}, a local folder or a Hub id")
    if name_or_path in MODELS:
        return str(model_path(name_or_path)), MODELS[name_or_path].hub_id or name_or_path
    expanded = os.path.expanduser(name_or_path)
    if Path(expanded).is_dir():
        if not (Path(expanded) / "config.json").is_file():
            raise FileNotFoundError(f"model={name_or_path!r} is a folder without config.json: not a transformers model folder")
        return expanded, str(Path(expanded).resolve())
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or os.sep in name_or_path.replace("/", ""):
        raise FileNotFoundError(
            f"model={name_or_path!r} is not a folder; allowed: a packaged name {sorted(MODELS)}, a local "
            "transformers folder, or a Hub id 'owner/name'"
        )
    return name_or_path, name_or_path


def load_base(
    name_or_path: str,
    *,
    revision: str | None = None,
    dtype: str = "float32",
    load_in_4bit: bool = False,
    attn_implementation: str = "sdpa",
):
    """``(model, tokenizer)`` for ``name_or_path``, in eval mode, family checked.

    Args:
        name_or_path: a packaged name, a local transformers folder or a Hub id.
        revision: Hub branch, tag or commit (Hub ids only).
        dtype: one of ``DTYPES`` (``auto``: the checkpoint's own).
        load_in_4bit: quantise the linear layers to bitsandbytes NF4 (compute dtype: ``dtype``, or
            float32 for ``auto``).
        attn_implementation: one of ``ATTN_IMPLEMENTATIONS``.

    Raises:
        ValueError: a bad option, or a model family sdtp_adapter does not support (names the supported ones).
        FileNotFoundError: the model cannot be found (missing folder, unknown or unreachable Hub id).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .architectures import architecture_of

    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is invalid; allowed: {list(DTYPES)}")
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation={attn_implementation!r} is invalid; allowed: {list(ATTN_IMPLEMENTATIONS)}")
    if not isinstance(load_in_4bit, bool):
        raise ValueError(f"load_in_4bit={load_in_4bit!r} is invalid; allowed: True or False")
    source, recorded = resolve_model(name_or_path)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    options = {"dtype": torch_dtype, "attn_implementation": attn_implementation}
    if revision is not None:
        options["revision"] = revision
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        compute = torch.float32 if dtype == "auto" else torch_dtype
        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute
        )
    _check_family(source, revision)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **options)
        tokenizer = AutoTokenizer.from_pretrained(source, **({"revision": revision} if revision else {}))
    except OSError as err:  # transformers' "not a valid model identifier / cannot reach the Hub"
        raise FileNotFoundError(f"cannot load model={name_or_path!r}: {err}") from err
    architecture_of(model)
    model.eval()
    model.config._name_or_path = recorded
    model.name_or_path = recorded
    tokenizer.name_or_path = recorded
    return model, tokenizer


def _check_family(source: str, revision: str | None) -> None:
    """Refuse an unsupported family from its config alone, before the weights load."""
    from transformers import AutoConfig

    from .architectures import ARCHITECTURES

    try:
        config = AutoConfig.from_pretrained(source, **({"revision": revision} if revision else {}))
    except OSError as err:
        raise FileNotFoundError(f"cannot load the config of model={source!r}: {err}") from err
    model_type = getattr(config, "model_type", None)
    # multimodal wrappers (gemma3) keep the decoder's type in text_config
    text_type = getattr(getattr(config, "text_config", None), "model_type", None)
    if model_type not in ARCHITECTURES and text_type not in ARCHITECTURES:
        raise ValueError(
            f"model={source!r} has model_type={model_type!r}, which sdtp_adapter does not support; supported: "
            f"{sorted(ARCHITECTURES)} (see docs/architectures.md to add a family)"
        )
