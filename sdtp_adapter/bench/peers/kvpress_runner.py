"""kvpress measurements, run by the python of kvpress's own environment (``.venv-kvpress``).

kvpress pins an older transformers than ``sdtp_adapter``, so this script must not import ``sdtp_adapter``:
everything it needs comes from an input JSON file and everything it measures goes to an output JSON file::

    .venv-kvpress/bin/python kvpress_runner.py input.json output.json

Input keys: ``model_dir`` (a transformers model folder), ``windows`` (token-id lists, each ``prefix +
continuation`` long), ``prefix``, ``compression_ratio``, ``presses`` (kvpress class names),
``decode_tokens``, ``repeats`` and optionally ``parity`` = ``{"file": path of a torch file holding
"input_ids" [T] and "logits" [T, V] computed by the other environment, "tolerance": float}``.

Fidelity follows ``sdtp_adapter.bench.fidelity.compare_methods``: the prefix is prefilled (compressed by the
press), the continuation is fed on top of the cache in one chunk, and every continuation token's
distribution is compared with the unpruned model's. kvpress compresses during prefill only (its hooks
skip any forward pass that does not start at position 0), so the continuation chunk is never compressed.

Only torch is imported at module level, so the pure arithmetic (``fidelity_sums``, ``summarize``) can be
imported and tested from any environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

BASELINE = "unpruned"
INPUT_KEYS = ("model_dir", "windows", "prefix", "compression_ratio", "presses", "decode_tokens", "repeats")


# ---------------------------------------------------------------- pure arithmetic (tested from our env)
def fidelity_sums(ref: torch.Tensor, got: torch.Tensor, targets: torch.Tensor) -> tuple[float, float, int, float]:
    """Sums over one window's continuation tokens, as ``compare_methods`` accumulates them.

    Args:
        ref: ``[C, V]`` log-probabilities of the unpruned model.
        got: ``[C, V]`` log-probabilities with the compressed prefix.
        targets: ``[C]`` the continuation token ids.

    Returns:
        ``(reference NLL sum, NLL sum, argmax agreements, KL(ref || got) sum in nats)``.
    """
    if ref.shape != got.shape or ref.dim() != 2 or targets.shape != ref.shape[:1]:
        raise ValueError(f"shapes ref={tuple(ref.shape)} got={tuple(got.shape)} targets={tuple(targets.shape)}; "
                         "allowed: ref and got [C, V], targets [C]")
    index = targets[:, None]
    return (
        float(-ref.gather(1, index).sum()),
        float(-got.gather(1, index).sum()),
        int((ref.argmax(-1) == got.argmax(-1)).sum()),
        float((ref.exp() * (ref - got)).sum()),
    )


def summarize(sums: list[tuple[float, float, int, float]], tokens_per_window: int) -> dict:
    """Means over all continuation tokens of the per-window ``fidelity_sums`` (``Fidelity``'s fields)."""
    if not sums or tokens_per_window < 1:
        raise ValueError(f"sums has {len(sums)} windows and tokens_per_window={tokens_per_window}; both must be >= 1")
    base, nll, agree, kl = (sum(column) for column in zip(*sums))
    count = len(sums) * tokens_per_window
    return {
        "base_nll": base / count,
        "nll": nll / count,
        "delta_nll_pct": 100 * (nll - base) / base,
        "top1": agree / count,
        "kl": kl / count,
        "windows": len(sums),
        "tokens": tokens_per_window,
    }


def validate_input(spec: dict) -> None:
    """Raise ValueError naming the first missing or inconsistent input field."""
    missing = [k for k in INPUT_KEYS if k not in spec]
    if missing:
        raise ValueError(f"input JSON lacks {missing}; required keys: {list(INPUT_KEYS)}")
    prefix, windows = spec["prefix"], spec["windows"]
    if not windows:
        raise ValueError("windows=[]: at least one window is needed")
    lengths = sorted({len(w) for w in windows})
    if len(lengths) != 1 or lengths[0] < prefix + 2:
        raise ValueError(f"window lengths {lengths}: all windows must have one length >= prefix + 2 = {prefix + 2}")
    if not 0 < spec["compression_ratio"] < 1:
        raise ValueError(f"compression_ratio={spec['compression_ratio']}; allowed: 0 < ratio < 1")
    for key in ("decode_tokens", "repeats"):
        if spec[key] < 1:
            raise ValueError(f"{key}={spec[key]}; allowed: >= 1")


# ---------------------------------------------------------------- model passes
# Copied from sdtp_adapter.pruning.cache.kv_bytes (this runner must not import sdtp_adapter);
# tests/test_kvpress_peer.py checks that the two agree.
def kv_bytes(cache) -> int:
    """Bytes held by the keys and values of every layer of a transformers cache."""
    total = 0
    for layer in cache.layers:
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def prefill(model, ids: torch.Tensor, press):
    """Prefill ``ids`` ``[1, P]`` (compressed by ``press`` if given); returns ``(cache, last logits [1, V])``."""
    from transformers import DynamicCache

    cache = DynamicCache()
    with press(model) if press is not None else contextlib.nullcontext():
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return cache, out.logits[:, -1]


def continuation_logprobs(model, window: torch.Tensor, prefix: int, press) -> torch.Tensor:
    """``[C, V]`` log-probabilities of the tokens after the first ``prefix`` tokens of ``window`` ``[1, P + C]``."""
    cache, first = prefill(model, window[:, :prefix], press)
    rest_ids = window[:, prefix:-1]
    # The compressed cache is shorter than ``prefix``: give the true positions explicitly (as kvpress's
    # pipeline does) so RoPE sees the continuation where it really is.
    positions = torch.arange(prefix, prefix + rest_ids.shape[1])[None]
    rest = model(input_ids=rest_ids, past_key_values=cache, position_ids=positions, use_cache=True)
    return F.log_softmax(torch.cat([first[:, None], rest.logits], dim=1)[0].float(), dim=-1)


def timed_generation(model, ids: torch.Tensor, press, decode_tokens: int) -> tuple[float, float, int]:
    """Prefill ``ids`` ``[1, P]``, then greedily decode ``decode_tokens`` tokens.

    Returns:
        ``(prefill seconds, decode seconds, KV bytes after prefill)``.
    """
    start = time.perf_counter()
    cache, logits = prefill(model, ids, press)
    prefilled = time.perf_counter()
    size = kv_bytes(cache)
    token = logits.argmax(-1, keepdim=True)
    position = ids.shape[1]
    decode_start = time.perf_counter()
    for step in range(decode_tokens):
        positions = torch.tensor([[position + step]])  # true position: the compressed cache is shorter
        out = model(input_ids=token, past_key_values=cache, position_ids=positions, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
    end = time.perf_counter()
    return prefilled - start, end - decode_start, size


def make_presses(names: list[str], ratio: float) -> dict:
    """``{name: kvpress press at compression ratio ratio}``; ValueError for names kvpress lacks."""
    import kvpress

    available = sorted(n for n in dir(kvpress) if n.endswith("Press") and isinstance(getattr(kvpress, n), type))
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"presses {unknown} are not in kvpress {kvpress_version()}; available: {available}")
    presses = {}
    for name in names:
        try:
            presses[name] = getattr(kvpress, name)(compression_ratio=ratio)
        except TypeError as err:  # wrapper presses need another press, not a ratio
            raise ValueError(f"press {name!r} cannot be built from compression_ratio alone ({err})") from err
    return presses


def kvpress_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("kvpress")


def check_parity(model, parity: dict) -> float:
    """Max absolute logit difference against the other environment's logits; ValueError above tolerance."""
    ref = torch.load(parity["file"], weights_only=True)
    with torch.inference_mode():
        logits = model(input_ids=ref["input_ids"][None]).logits[0].float()
    diff = float((logits - ref["logits"]).abs().max())
    if diff > parity["tolerance"]:
        raise ValueError(
            f"unpruned logits differ from sdtp_adapter's environment by {diff:.3g} > tolerance={parity['tolerance']}: "
            "the model folder is not loaded identically by this transformers version"
        )
    return diff


# ---------------------------------------------------------------- the run
def measure(spec: dict) -> dict:
    """All measurements of one input spec (see the module docstring); returns the output dict."""
    import transformers
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    validate_input(spec)
    hf_logging.disable_progress_bar()  # the weight-loading bar floods the streamed log
    prefix, ratio = spec["prefix"], spec["compression_ratio"]
    presses = make_presses(spec["presses"], ratio)
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32, attn_implementation="sdpa")
    model.eval()
    out = {
        "versions": {
            "kvpress": kvpress_version(),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "torch_threads": torch.get_num_threads(),
        "compression_ratio": ratio,
        "prefix": prefix,
        "failed": {},
    }
    if spec.get("parity"):
        out["parity_max_abs_logit_diff"] = check_parity(model, spec["parity"])
        print(f"parity: max |logit diff| vs sdtp_adapter env = {out['parity_max_abs_logit_diff']:.2e}", flush=True)

    windows = [torch.tensor([w]) for w in spec["windows"]]
    continuation = windows[0].shape[1] - prefix
    sums: dict[str, list] = {name: [] for name in presses}
    base_sums = []
    with torch.inference_mode():
        for i, window in enumerate(windows):
            targets = window[0, prefix:]
            ref = continuation_logprobs(model, window, prefix, None)
            base_sums.append(fidelity_sums(ref, ref, targets))
            for name, press in list(presses.items()):
                try:
                    sums[name].append(fidelity_sums(ref, continuation_logprobs(model, window, prefix, press), targets))
                except Exception as err:  # a press that does not run here is reported, not hidden
                    out["failed"][name] = f"{type(err).__name__}: {err}"
                    print(f"{name} failed: {out['failed'][name]}", flush=True)
                    del presses[name], sums[name]
            print(f"fidelity: window {i + 1}/{len(windows)}", flush=True)

        # Speed: one warm-up round, then ``repeats`` rounds with every method in turn on the first window's
        # prefix, so machine noise hits all methods alike.
        runs = {BASELINE: None, **presses}
        ids = windows[0][:, :prefix]
        times: dict[str, list] = {name: [] for name in runs}
        for round_index in range(spec["repeats"] + 1):
            for name, press in runs.items():
                result = timed_generation(model, ids, press, spec["decode_tokens"])
                if round_index:
                    times[name].append(result)
            label = " (warm-up)" if not round_index else ""
            print(f"speed: round {round_index}/{spec['repeats']}{label}", flush=True)

    rows = {}
    for name in runs:
        prefill_s = [t[0] for t in times[name]]
        tok_s = [spec["decode_tokens"] / t[1] for t in times[name]]
        rows[name] = {
            "press": name if name != BASELINE else None,
            "kv_bytes": times[name][0][2],
            "prefill_s": statistics.median(prefill_s),
            "prefill_s_range": [min(prefill_s), max(prefill_s)],
            "decode_tok_s": statistics.median(tok_s),
            "decode_tok_s_range": [min(tok_s), max(tok_s)],
            **summarize(base_sums if name == BASELINE else sums[name], continuation),
        }
    out["rows"] = rows
    return out


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temp file and a rename (a reader never sees half a file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python kvpress_runner.py INPUT.json OUTPUT.json")
    spec = json.loads(Path(argv[0]).read_text())
    write_json(Path(argv[1]), measure(spec))


if __name__ == "__main__":
    main(sys.argv[1:])
