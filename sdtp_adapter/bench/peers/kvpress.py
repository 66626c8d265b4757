"""kvpress presses as peers of SDTP (``sdtp bench kvpress``), measured in kvpress's own environment.

kvpress (NVIDIA's KV-cache compression library) pins an older transformers than ``sdtp_adapter``, so it
lives in a separate virtual environment (``.venv-kvpress``, built on demand or by ``make kvpress-env``).
This module runs in our environment: it builds the same held-out windows as the other sections, writes
them to an input JSON, runs ``kvpress_runner.py`` with the kvpress environment's python, and turns the
runner's output JSON into ``<--out DIR>/kvpress.json``, a plot and a markdown table. It runs the
default packaged model only (the environment's transformers loads that one folder), on the held-out plays.

The compression ratio defaults to SDTP's own KV reduction at the same prefix length (the shipped
adapter's schedule), so both methods keep the same number of cached key/value entries.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ...schedule import StageSchedule
from ...zoo import DEFAULT_MODEL
from ..meta import read_results, results_dir, run_meta, write_results

SECTION = "kvpress"
MODEL = DEFAULT_MODEL  # the one model the kvpress environment runs
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_ENV = REPO_ROOT / ".venv-kvpress"
RUNNER = Path(__file__).with_name("kvpress_runner.py")
# kvpress 0.5.5 requires transformers>=4.56,<5.3 and no CUDA-only package; torch is pinned first so pip
# keeps the CPU build already on disk instead of resolving a multi-GB CUDA wheel.
TORCH_REQUIREMENT = "torch==2.13.0"
KVPRESS_REQUIREMENTS = ("kvpress==0.5.5", "transformers==5.2.0")
INSTALLED_MARKER = ".sdtp-installed"
DEFAULT_PRESSES = ("KnormPress", "SnapKVPress", "ExpectedAttentionPress", "StreamingLLMPress")
BASELINE = "unpruned"
PARITY_TOKENS = 256
PARITY_TOLERANCE = 1e-3
MIB = 2**20


# ---------------------------------------------------------------- the kvpress environment
def env_python(env: Path) -> Path:
    """The python interpreter of the virtual environment ``env``."""
    return Path(env) / "bin" / "python"


def env_commands(env: Path, python: str = sys.executable) -> list[list[str]]:
    """Commands that build the kvpress environment at ``env`` (``--clear`` redoes a half-built one)."""
    pip = [str(env_python(env)), "-m", "pip", "install", "--quiet"]
    return [
        [python, "-m", "venv", "--clear", str(env)],
        [*pip, TORCH_REQUIREMENT],
        [*pip, TORCH_REQUIREMENT, *KVPRESS_REQUIREMENTS],
    ]


def ensure_env(env: Path = DEFAULT_ENV, create: bool = True) -> Path:
    """Return the kvpress environment's python, building the environment first if it is missing.

    Raises:
        FileNotFoundError: the environment is missing (or half-built) and ``create`` is False.
    """
    env = Path(env)
    marker = env / INSTALLED_MARKER
    if marker.is_file():
        return env_python(env)
    requirements = " ".join((TORCH_REQUIREMENT, *KVPRESS_REQUIREMENTS))
    if not create:
        raise FileNotFoundError(
            f"the kvpress environment {env} is missing or incomplete (no {INSTALLED_MARKER}); build it with "
            f"`make kvpress-env` or rerun without --no-create-env (it installs {requirements})"
        )
    print(f"kvpress environment {env} is missing: creating it ({requirements}; a few minutes)", flush=True)
    for command in env_commands(env):
        subprocess.run(command, check=True)
    marker.write_text(requirements + "\n")
    return env_python(env)


# ---------------------------------------------------------------- inputs
def sdtp_kv_reduction(schedule: StageSchedule, prefix: int, num_layers: int) -> float:
    """Share of the ``prefix x num_layers`` KV entries that SDTP's pruned prefill does not cache."""
    if prefix < 1 or num_layers < 1:
        raise ValueError(f"prefix={prefix}, num_layers={num_layers}; allowed: both >= 1")
    return 1 - schedule.kept_share(prefix, num_layers)


def shipped_kv_reduction(prefix: int, model: str = MODEL) -> float:
    """``sdtp_kv_reduction`` of the shipped adapter of ``model`` (reads configs only, loads no weights)."""
    from ...config import SDTPConfig
    from ...zoo import SHIPPED_ADAPTERS, model_path

    num_layers = json.loads((model_path(model) / "config.json").read_text())["num_hidden_layers"]
    schedule = SDTPConfig.from_pretrained(SHIPPED_ADAPTERS / model).schedule(num_layers)
    return sdtp_kv_reduction(schedule, prefix, num_layers)


def build_input(
    model_dir: Path,
    windows: list[torch.Tensor],
    prefix: int,
    compression_ratio: float,
    presses: list[str],
    decode_tokens: int,
    repeats: int,
    parity_file: Path | None = None,
) -> dict:
    """The runner's input JSON (plain lists and numbers; the runner sees no ``sdtp_adapter`` object).

    Args:
        windows: ``[1, prefix + C]`` token windows.
        parity_file: torch file with our environment's unpruned logits for the parity check, if any.
    """
    if not 0 < compression_ratio < 1:
        raise ValueError(f"compression_ratio={compression_ratio}; allowed: 0 < ratio < 1")
    if not presses:
        raise ValueError(f"presses={presses}: name at least one kvpress press, e.g. {list(DEFAULT_PRESSES)}")
    lengths = sorted({w.shape[-1] for w in windows})
    if len(lengths) != 1 or lengths[0] < prefix + 2:
        raise ValueError(f"window lengths {lengths}: all windows need one length >= prefix + 2 = {prefix + 2}")
    spec = {
        "model_dir": str(model_dir),
        "windows": [w.reshape(-1).tolist() for w in windows],
        "prefix": prefix,
        "compression_ratio": compression_ratio,
        "presses": list(presses),
        "decode_tokens": decode_tokens,
        "repeats": repeats,
    }
    if parity_file is not None:
        spec["parity"] = {"file": str(parity_file), "tolerance": PARITY_TOLERANCE}
    return spec


def write_parity_reference(model, ids: torch.Tensor, path: Path) -> None:
    """Save our environment's unpruned logits ``[T, V]`` for ``ids`` ``[1, T]`` for the runner to compare."""
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float()
    torch.save({"input_ids": ids[0].clone(), "logits": logits}, path)


# ---------------------------------------------------------------- outputs
def results_from_output(output: dict, continuation: int, ratio_source: str) -> dict:
    """Section results from the runner's output: rows gain MiB and their share of the unpruned cache."""
    rows = output["rows"]
    if BASELINE not in rows:
        raise ValueError(f"runner output rows {sorted(rows)} lack the {BASELINE!r} baseline")
    base = rows[BASELINE]
    for row in rows.values():
        row["kv_mib"] = row["kv_bytes"] / MIB
        row["kv_share"] = row["kv_bytes"] / base["kv_bytes"]
        row["decode_speedup"] = row["decode_tok_s"] / base["decode_tok_s"]
    return {
        "model": MODEL,
        "prefix": output["prefix"],
        "continuation": continuation,
        "windows": base["windows"],
        "compression_ratio": output["compression_ratio"],
        "compression_ratio_source": ratio_source,
        "env": {**output["versions"], "torch_threads": output["torch_threads"]},
        "parity_max_abs_logit_diff": output.get("parity_max_abs_logit_diff"),
        "rows": rows,
        "failed": output.get("failed", {}),
    }


def load_results(directory: Path) -> dict | None:
    """The stored section results (``rows``: method name -> metrics), or None if never run."""
    data = read_results(SECTION, directory)
    return None if data is None else data["results"]


# ---------------------------------------------------------------- section interface
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--windows", type=int, default=12, help="held-out windows for fidelity")
    parser.add_argument("--prefix", type=int, default=2048, help="prefix tokens (compressed)")
    parser.add_argument("--continuation", type=int, default=128, help="continuation tokens scored on top")
    parser.add_argument("--compression-ratio", type=float, default=None,
                        help="share of KV pairs each press removes (default: SDTP's KV reduction at --prefix)")
    parser.add_argument("--presses", nargs="+", default=list(DEFAULT_PRESSES), help="kvpress press class names")
    parser.add_argument("--decode-tokens", type=int, default=32, help="greedy tokens per timed decode")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds (after one warm-up)")
    parser.add_argument("--env", type=Path, default=DEFAULT_ENV, help="kvpress virtual environment")
    parser.add_argument("--no-create-env", action="store_true", help="fail instead of building a missing --env")


def run(args: argparse.Namespace) -> dict:
    from ...data.corpora import shakespeare_texts
    from ..fidelity import text_windows
    from ...zoo import load_model, model_path

    python = ensure_env(args.env, create=not args.no_create_env)
    if args.compression_ratio is None:
        ratio = shipped_kv_reduction(args.prefix)
        source = "SDTP's KV reduction at this prefix length (shipped adapter's schedule)"
    else:
        ratio, source = args.compression_ratio, "--compression-ratio"
    print(f"compression ratio {ratio:.4f} ({source}) at prefix {args.prefix}", flush=True)

    model, tokenizer = load_model(MODEL)
    texts = list(shakespeare_texts("heldout").values())
    windows = text_windows(tokenizer, texts, args.windows, args.prefix + args.continuation, seed=0)
    with tempfile.TemporaryDirectory(prefix="sdtp-kvpress-") as tmp:
        tmp = Path(tmp)
        write_parity_reference(model, windows[0][:, :PARITY_TOKENS], tmp / "parity.pt")
        del model  # the runner loads its own copy; keep one model in memory
        spec = build_input(model_path(MODEL), windows, args.prefix, ratio, args.presses, args.decode_tokens,
                           args.repeats, parity_file=tmp / "parity.pt")
        (tmp / "input.json").write_text(json.dumps(spec))
        # -I: isolated mode keeps the runner's own folder (which holds this kvpress.py) off sys.path, so
        # ``import kvpress`` finds the library, and ignores PYTHONPATH pointing at our environment.
        subprocess.run([str(python), "-I", str(RUNNER), str(tmp / "input.json"), str(tmp / "output.json")], check=True)
        output = json.loads((tmp / "output.json").read_text())
    results = results_from_output(output, args.continuation, source)
    directory = results_dir(args)
    write_results(SECTION, run_meta(args.command_line), results, directory)
    plot(results, directory)
    return results


def plot(results: dict, directory: Path) -> Path:
    """``kvpress.png``: continuation dNLL and decode tokens/s per method (every press keeps the same KV size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...files import publish

    rows = results["rows"]
    names = list(rows)
    positions = range(len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(positions, [rows[n]["delta_nll_pct"] for n in names], color="tab:orange")
    left.set_ylabel("continuation dNLL (%)")
    right.bar(positions, [rows[n]["decode_tok_s"] for n in names], color="tab:blue")
    right.set_ylabel("decode tokens/s (greedy, CPU fp32)")
    for axis in (left, right):
        axis.set_xticks(positions, names, rotation=20, ha="right")
    base, pressed = rows[BASELINE]["kv_mib"], min(r["kv_mib"] for r in rows.values())
    fig.suptitle(f"kvpress at compression ratio {results['compression_ratio']:.3f}, prefix {results['prefix']}: "
                 f"KV cache {base:.1f} MiB unpruned, {pressed:.1f} MiB pressed")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "kvpress.png"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".kvpress.png.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        publish(tmp, path)  # atomic: the page never links a half-written image
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def render(data: dict) -> list[str]:
    res = data["results"]
    env = res["env"]
    parity = res.get("parity_max_abs_logit_diff")
    lines = [
        "## kvpress: KV-cache compression peers",
        "",
        f"{res['model']}, CPU fp32, kvpress {env['kvpress']} in its own environment (transformers "
        f"{env['transformers']}, torch {env['torch']}, {env['torch_threads']} threads). Every press removes "
        f"{100 * res['compression_ratio']:.1f}% of the prefix's KV pairs "
        f"(ratio from {res['compression_ratio_source']}). "
        f"Fidelity: {res['windows']} held-out windows, {res['prefix']}-token prefix + {res['continuation']} "
        "continuation tokens fed on top of the compressed cache, compared with the unpruned model"
        + (f" (unpruned logits match sdtp_adapter's environment to {parity:.1e})" if parity is not None else "")
        + ". Speed: prefill of the first window's prefix, then greedy decoding on the compressed cache, "
        "medians of interleaved rounds.",
        "",
        "| method | KV after prefill (MiB) | KV kept | prefill (s) | decode tok/s | dNLL | top-1 | KL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in res["rows"].items():
        lo, hi = row["prefill_s_range"]
        dlo, dhi = row["decode_tok_s_range"]
        lines.append(
            f"| {name} | {row['kv_mib']:.1f} | {row['kv_share']:.2f} | {row['prefill_s']:.2f} [{lo:.2f}-{hi:.2f}] | "
            f"{row['decode_tok_s']:.1f} [{dlo:.1f}-{dhi:.1f}] | {row['delta_nll_pct']:+.2f}% | {row['top1']:.3f} | "
            f"{row['kl']:.3f} |"
        )
    for name, error in res.get("failed", {}).items():
        lines.append(f"| {name} | failed: {error} | | | | | | |")
    lines += [
        "",
        "kvpress prunes the KV cache after each layer's full prefill: every layer still processes all prefix "
        "tokens, so it saves KV memory and decode time (fewer keys to attend), not prefill compute (scoring "
        "even adds a little). SDTP drops tokens between layers during prefill, which cuts prefill compute as "
        "well; at the default ratio both keep the same number of cached KV entries.",
        "",
        "![kvpress: KV memory against dNLL, decode speed](benchmarks/kvpress.png)",
    ]
    return lines
