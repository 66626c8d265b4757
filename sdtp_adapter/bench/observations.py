"""``sdtp bench observations``: the paper's two saliency observations, measured on our model.

SDTP motivates hierarchical pruning with two properties of gradient saliency (grad x input of the
target log-likelihood at each layer's input, summed over the hidden dim, one score per token):

1. *sparsity grows with depth*: the share of tokens whose saliency exceeds 10% of the layer's
   maximum falls as layers get deeper;
2. *transitivity*: tokens that are unimportant at an earlier layer stay unimportant later, so a
   token pruned at stage s would not have been needed at stage t > s.

Every metric is computed over a stage's *candidates* (tokens the adapter may prune: not the first
``protected_first`` sinks, not the recent window), as the project's training normalises saliency
(``normalize_saliency``); the sinks carry saliency orders of magnitude above the rest and would set
every layer's maximum otherwise. The share above 10% over all tokens is reported as well.
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import torch
from torch import nn

from ..architectures import decoder_layers
from ..schedule import StageSchedule
from .common import adapter_source, add_model_arguments, model_label
from .meta import results_dir, run_meta, write_results
from .plotting import pyplot, save_figure
from .saliency_metrics import (
    IMPORTANT_FRACTION,
    LOW_SHARE,
    TOP_SHARE,
    layer_saliency,
    mean_metrics,
    sample_metrics,
    spearman_matrix,
)

SECTION = "observations"
CHAT_KINDS = ("passkey", "kv", "needle")
PLOTS = {
    "sparsity": "observations-sparsity.png",
    "transitivity": "observations-transitivity.png",
    "tokens": "observations-tokens.png",
}
# sample groups, in table order; the first is the one the verdicts and the transitivity plot use
TEXT_TAIL, TEXT_FULL, CHAT = "text, tail target", "text, full-window target", "retrieval chat, answer target"


def measure(
    model: nn.Module, samples: dict[str, list[dict]], schedule: StageSchedule, example: list | None = None
) -> dict[str, dict]:
    """Saliency metrics of every group of samples under the full, unpruned ``model``.

    Args:
        samples: ``{group: [{"input_ids": [N], "target_mask": [N]}, ...]}``.
        schedule: gives the protected tokens (sinks, recent window) left out of the metrics.
        example: if a list, receives the ``[L, N]`` saliency of the first sample of the first group.
    Returns:
        ``{group: mean_metrics(...)}``.
    """
    from ..pruning.selection import protected_mask

    out = {}
    for group, rows in samples.items():
        per_sample = []
        for row in rows:
            ids = torch.tensor([row["input_ids"]], device=model.device)
            target = torch.tensor([row["target_mask"]], dtype=torch.bool, device=model.device)
            saliency = layer_saliency(model, ids, target).cpu()
            n = ids.shape[1]
            candidates = ~protected_mask(torch.arange(n)[None], n, schedule)[0]
            per_sample.append(sample_metrics(saliency, candidates))
            if example is not None and not example:
                example.append(saliency)
        out[group] = mean_metrics(per_sample)
    return out


# --------------------------------------------------------------------------- verdicts
def sparsity_verdict(shares: list[float], stage_layers: list[int]) -> dict:
    """Does the important share fall with depth over the stage layers?

    Holds when the share at the last stage layer is below the share at the first one and the rank
    correlation between depth and share over the stage layers is negative.
    """
    values = torch.tensor([shares[layer] for layer in stage_layers], dtype=torch.float64)
    depth = torch.tensor(stage_layers, dtype=torch.float64)
    rho = float(spearman_matrix(torch.stack([depth, values]))[0, 1])
    first, last = float(values[0]), float(values[-1])
    return {"holds": bool(last < first and rho < 0), "first": first, "last": last, "rho": rho}


def transitivity_verdict(stays_low: list[list[float]], stage_layers: list[int]) -> dict:
    """Do tokens low at one stage stay low at every later stage more often than chance (0.5)?"""
    pairs = [stays_low[s][t] for i, s in enumerate(stage_layers) for t in stage_layers[i + 1 :]]
    first_last = stays_low[stage_layers[0]][stage_layers[-1]]
    return {"holds": bool(min(pairs) > LOW_SHARE), "min": min(pairs), "first_last": first_last}


# --------------------------------------------------------------------------- plots
def plot_sparsity(results: dict, directory: Path) -> None:
    """Important share and top-10% mass against layer, one line per group, stage layers marked."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for group, data in results["groups"].items():
        layers = range(len(data["important_share"]))
        left.plot(layers, data["important_share"], marker=".", label=group)
        right.plot(layers, data["top_mass"], marker=".", label=group)
    for ax in (left, right):
        for layer in results["stage_layers"]:
            ax.axvline(layer, color="0.85", linewidth=0.8, zorder=0)
        ax.set_xlabel("layer (saliency at its input); grey lines: SDTP stage layers")
    left.set_ylabel(f"share of tokens above {IMPORTANT_FRACTION:.0%} of the layer max")
    right.set_ylabel(f"share of saliency mass in the top {TOP_SHARE:.0%} of tokens")
    left.legend(fontsize=8)
    fig.suptitle(f"{results['model']}: saliency sparsity per layer (candidates, mean over samples)")
    save_figure(fig, PLOTS["sparsity"], directory)


def plot_transitivity(results: dict, directory: Path) -> None:
    """Heatmaps over layer pairs of the stays-low rate and the Spearman correlation (first group)."""
    plt = pyplot()
    group = next(iter(results["groups"]))
    data = results["groups"][group]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    panels = (
        ("stays_low", f"stays-low rate (bottom {LOW_SHARE:.0%} at s, still at t; random {LOW_SHARE})", 0.0, 1.0),
        ("spearman", "Spearman rank correlation of token saliency", -1.0, 1.0),
    )
    for ax, (key, title, low, high) in zip(axes, panels):
        image = ax.imshow(data[key], vmin=low, vmax=high, cmap="viridis", origin="lower")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("layer t")
        ax.set_ylabel("layer s")
        ax.set_xticks(results["stage_layers"])
        ax.set_yticks(results["stage_layers"])
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(f"{results['model']}: transitivity of saliency ({group}; ticks: stage layers)")
    save_figure(fig, PLOTS["transitivity"], directory)


def plot_tokens(saliency: torch.Tensor, results: dict, directory: Path) -> None:
    """Token-by-layer heatmap of one sample's saliency, each layer scaled by its maximum (log scale)."""
    plt = pyplot()
    scaled = saliency / saliency.amax(dim=-1, keepdim=True).clamp_min(1e-30)
    fig, ax = plt.subplots(figsize=(12, 4))
    log = scaled.clamp_min(1e-4).log10().numpy()
    image = ax.imshow(log, aspect="auto", cmap="magma", origin="lower", vmin=-4, vmax=0)
    n = saliency.shape[-1]
    # where the differentiated tail starts and where the never-pruned recent window starts
    target = n - max(1, int(round(results["tail_ratio"] * n)))
    window = n - math.ceil(results["local_window_ratio"] * n - 1e-9)
    ax.axvline(target, color="cyan", linestyle="--", label="target starts")
    ax.axvline(window, color="white", linestyle=":", label="recent window")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("token position")
    ax.set_ylabel("layer")
    fig.colorbar(image, ax=ax, label="log10(saliency / layer max), all tokens")
    fig.suptitle(f"{results['model']}: saliency of one held-out window ({next(iter(results['groups']))})")
    save_figure(fig, PLOTS["tokens"], directory)


# --------------------------------------------------------------------------- section interface
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sdtp bench observations``."""
    add_model_arguments(
        parser, "adapter (folder, shipped adapter name or Hub id) whose config gives the stage layers, protected "
        "tokens and text target tail",
    )
    parser.add_argument("--samples", type=int, default=8, help="held-out text windows")
    parser.add_argument("--length", type=int, default=1024, help="tokens per window")
    parser.add_argument("--chats", type=int, default=3, help="retrieval chats (passkey, kv, needle in turn); 0 = none")
    parser.add_argument(
        "--full-window-samples", type=int, default=2,
        help="of the windows, how many also get a pass with every next token as target (0 = none)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the text windows and chats")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def build_samples(tokenizer, args: argparse.Namespace, tail_ratio: float) -> dict[str, list[dict]]:
    """The sample groups: text windows with a tail target (as training), the same windows with every
    next-token prediction as target, and retrieval chats whose answer is the target."""
    from ..data.corpora import shakespeare_texts
    from ..data.tasks import retrieval_sample
    from .fidelity import text_windows

    texts = list(shakespeare_texts("heldout").values())
    windows = [w[0].tolist() for w in text_windows(tokenizer, texts, args.samples, args.length, args.seed)]
    cut = args.length - max(1, int(round(tail_ratio * args.length)))
    groups = {TEXT_TAIL: [{"input_ids": w, "target_mask": [i >= cut for i in range(len(w))]} for w in windows]}
    if args.full_window_samples:
        full = windows[: args.full_window_samples]
        groups[TEXT_FULL] = [{"input_ids": w, "target_mask": [i >= 1 for i in range(len(w))]} for w in full]
    if args.chats:
        rng = random.Random(args.seed)
        long_texts = [t for t in texts if len(t) > 10 * args.length]  # ~4 chars a token
        groups[CHAT] = [
            retrieval_sample(tokenizer, long_texts, int(0.9 * args.length), CHAT_KINDS[i % len(CHAT_KINDS)], rng)
            for i in range(args.chats)
        ]
    return groups


def run(args: argparse.Namespace) -> dict:
    """Measure every sample group, write the plots and ``observations.json`` to ``args.out``; return the results."""
    from ..config import SDTPConfig
    from ..hub import resolve_adapter
    from ..loading import load_base

    for name in ("samples", "length"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name}={getattr(args, name)} is invalid; expected an integer >= 1")
    for name in ("chats", "full_window_samples"):
        if getattr(args, name) < 0:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag}={getattr(args, name)} is invalid; expected an integer >= 0")
    if args.full_window_samples > args.samples:
        raise ValueError(
            f"--full-window-samples={args.full_window_samples} is invalid; expected at most --samples={args.samples}"
        )
    directory = results_dir(args)
    adapter = Path(resolve_adapter(adapter_source(args.model, args.adapter)))
    if not (adapter / "adapter_config.json").exists():
        raise ValueError(f"--adapter={str(adapter)!r} holds no adapter_config.json; pass an SDTP adapter folder")
    config = SDTPConfig.from_pretrained(adapter)
    model, tokenizer = load_base(args.model, revision=getattr(args, "revision", None))
    model.to(args.device)
    num_layers = len(decoder_layers(model))
    schedule = config.schedule(num_layers)
    tail = float(config.saliency_tail_ratio)
    example: list = []
    groups = measure(model, build_samples(tokenizer, args, tail), schedule, example)
    results = {
        "model": model_label(args.model),
        "num_layers": num_layers,
        "stage_layers": list(schedule.layers),
        "length": args.length,
        "tail_ratio": tail,
        "protected_first": schedule.protected_first,
        "local_window_ratio": schedule.local_window_ratio,
        "groups": groups,
        "plots": [PLOTS["sparsity"], PLOTS["transitivity"], PLOTS["tokens"]],
    }
    plot_sparsity(results, directory)
    plot_transitivity(results, directory)
    plot_tokens(example[0], results, directory)
    write_results(SECTION, run_meta(args.command_line, args.device), results, directory)
    return results


def render(data: dict) -> list[str]:
    """Markdown: what was measured, the stage-layer table, the plots and a computed verdict per observation."""
    res = data["results"]
    stages = res["stage_layers"]
    groups = res["groups"]
    main = groups[next(iter(groups))]
    lines = [
        "## Saliency observations (sparsity with depth, transitivity)",
        "",
        f"{res['model']} ({res['num_layers']} layers). Saliency = |sum over hidden dim of grad x input| at each "
        "layer's input, from one backward pass of the summed log-likelihood of the target tokens through the "
        f"unpruned model. Samples: {res['length']}-token held-out Shakespeare windows (*tail target*: the last "
        f"{res['tail_ratio']:.0%} of the window, as in training; *full-window target*: every next token) and retrieval "
        "chats of about the same length (passkey, key-value, needle; target: the answer), as far as present below. "
        f"Metrics use the tokens a stage may prune (not the first {res['protected_first']} sinks nor the last "
        f"{res['local_window_ratio']:.0%}); *all tokens* includes them. Important = saliency above "
        f"{IMPORTANT_FRACTION:.0%} of the layer's maximum; stays-low = of the tokens in the bottom {LOW_SHARE:.0%} at "
        f"the previous stage layer (or at layer {stages[0]}), the share still in the bottom {LOW_SHARE:.0%} "
        f"(random: {LOW_SHARE}). Transitivity columns use *{next(iter(groups))}*.",
        "",
    ]
    header = ["layer"]
    for group, g in groups.items():
        header.append(f"important, {group} (n={g['samples']})")
    header += [f"important, all tokens, {next(iter(groups))}", f"top-{TOP_SHARE:.0%} mass",
               "stays-low from prev. stage", f"stays-low from {stages[0]}", "Spearman with prev. stage"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, layer in enumerate(stages):
        prev = stages[i - 1] if i else None
        row = [str(layer)] + [f"{g['important_share'][layer]:.3f}" for g in groups.values()]
        row += [
            f"{main['important_share_all'][layer]:.3f}",
            f"{main['top_mass'][layer]:.3f}",
            f"{main['stays_low'][prev][layer]:.3f}" if prev is not None else "-",
            f"{main['stays_low'][stages[0]][layer]:.3f}" if i else "-",
            f"{main['spearman'][prev][layer]:.3f}" if prev is not None else "-",
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += [f"![{name}](benchmarks/{name})" for name in res["plots"]]
    first_group = next(iter(groups))
    others = [(group, g) for group, g in groups.items() if group != first_group]
    sparsity = sparsity_verdict(main["important_share"], stages)
    transitivity = transitivity_verdict(main["stays_low"], stages)
    sparsity_others = "; ".join(
        f"{group}: {_holds(v['holds'])} ({v['first']:.3f} to {v['last']:.3f}, Spearman {v['rho']:+.2f})"
        for group, v in ((group, sparsity_verdict(g["important_share"], stages)) for group, g in others)
    )
    transitivity_others = "; ".join(
        f"{group}: {_holds(v['holds'])} (min {v['min']:.3f})"
        for group, v in ((group, transitivity_verdict(g["stays_low"], stages)) for group, g in others)
    )
    lines += [
        "",
        f"Observation 1 (sparsity grows with depth) **{_holds(sparsity['holds'])}** on this model over the stage "
        f"layers ({first_group}): the important share goes from {sparsity['first']:.3f} at layer {stages[0]} to "
        f"{sparsity['last']:.3f} at layer {stages[-1]} (Spearman of share against depth {sparsity['rho']:+.2f}; "
        f"top-{TOP_SHARE:.0%} mass {main['top_mass'][stages[0]]:.3f} to {main['top_mass'][stages[-1]]:.3f})"
        + (f"; other targets: {sparsity_others}." if others else "."),
        "",
        f"Observation 2 (transitivity) **{_holds(transitivity['holds'])}** on this model ({first_group}): for every "
        f"pair of stage layers s < t the stays-low rate is at least {transitivity['min']:.3f} (random {LOW_SHARE}); "
        f"from layer {stages[0]} to layer {stages[-1]} it is {transitivity['first_last']:.3f}"
        + (f"; other targets: {transitivity_others}." if others else "."),
    ]
    return lines


def _holds(holds: bool) -> str:
    return "holds" if holds else "does not hold"
