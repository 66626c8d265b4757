"""Plots and markdown of ``sdtp bench speed`` results (the measuring lives in ``bench/speed.py``)."""

from __future__ import annotations

from pathlib import Path

from .plotting import pyplot, save_figure

METHODS = ("base", "sdtp")


# ---------------------------------------------------------------------------------------------- plots
def _errorbars(stats: list[dict], scale: float = 1.0) -> tuple[list[float], list[list[float]]]:
    medians = [scale * s["median"] for s in stats]
    low = [m - scale * s["min"] for m, s in zip(medians, stats)]
    high = [scale * s["max"] - m for m, s in zip(medians, stats)]
    return medians, [low, high]


def plot(rows: list[dict], section: str, title: str, directory: Path) -> list[str]:
    """Four PNGs ``<section>-{prefill,speedup,memory,decode}.png`` in ``directory``; returns their names."""
    plt = pyplot()
    tokens = [r["tokens"] for r in rows]
    labels = {"base": "base", "sdtp": "SDTP"}
    colors = {"base": "tab:blue", "sdtp": "tab:orange"}  # the same in every figure
    names = []

    def figure(kind: str, ylabel: str, logy: bool = False):
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        ax.set_xticks(tokens, [str(n) for n in tokens])
        ax.minorticks_off()
        ax.set_xlabel("prompt tokens")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: {kind}" if title else kind)
        ax.grid(alpha=0.3)
        return fig, ax

    def finish(fig, ax, kind: str) -> None:
        ax.legend(fontsize="small")
        name = f"{section}-{kind}.png"
        save_figure(fig, name, directory)
        names.append(name)

    fig, ax = figure("prefill", "prefill latency (ms)", logy=True)
    for m in METHODS:
        y, err = _errorbars([r["prefill_s"][m] for r in rows], 1000)
        ax.errorbar(tokens, y, yerr=err, marker="o", capsize=3, color=colors[m], label=labels[m])
    finish(fig, ax, "prefill")

    fig, ax = figure("speedup", "prefill speedup (base / SDTP)")
    ax.plot(tokens, [r["speedup"] for r in rows], marker="o", color="tab:orange", label="measured (medians)")
    bounds = [r["flops"]["bound"] for r in rows]
    ax.plot(tokens, bounds, marker="s", linestyle="--", color="tab:gray", label="analytic FLOPs bound")
    ax.axhline(1.0, color="gray", linewidth=0.8)
    finish(fig, ax, "speedup")

    fig, ax = figure("memory", "MiB", logy=True)
    for m in METHODS:
        ax.plot(tokens, [r["kv_mib"][m] for r in rows], marker="o", color=colors[m], label=f"KV cache, {labels[m]}")
    for m in METHODS:
        peaks = [r["peak_mib"][m] for r in rows]
        ax.plot(tokens, peaks, marker="^", linestyle="--", color=colors[m], label=f"peak during prefill, {labels[m]}")
    finish(fig, ax, "memory")

    fig, ax = figure("decode", "greedy decode tokens/s")
    for m in METHODS:
        y, err = _errorbars([r["decode_tok_s"][m] for r in rows])
        ax.errorbar(tokens, y, yerr=err, marker="o", capsize=3, color=colors[m], label=labels[m])
    finish(fig, ax, "decode")
    return names


# ---------------------------------------------------------------------------------------------- page
def _ms(stats: dict) -> str:
    return f"{1000 * stats['median']:.1f} [{1000 * stats['min']:.1f}-{1000 * stats['max']:.1f}]"


def _pair(values: dict, fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(values['base'])} / {fmt.format(values['sdtp'])}"


def render(data: dict) -> list[str]:
    """Markdown for ``docs/benchmarks.md``: description, table, FLOPs check, plots."""
    res = data["results"]
    on_gpu = str(res["device"]).startswith("cuda")
    lines = [
        f"## Speed: {res['model']}" + (" (CUDA)" if on_gpu else ""),
        "",
        f"{res['upstream']}, {res['dtype']}, {res['attention']}, {res['weights']}, on {res['device']}; adapter "
        f"{res['adapter']} with stages {res['stages']}, keep ratio {res['keep_ratio']} per stage. Input: {res['input']}. "
        f"Each of {res['repeats']} rounds (after {res['warmup']} warm-up) runs one greedy generation of the base and "
        f"one of SDTP: prefill (`logits_to_keep=1`), the first token read on the host (time to first token), then "
        f"{res['decode_tokens']} one-token decode steps on the prefilled cache. Medians, min-max in brackets. "
        f"Peak memory during prefill: {res['memory']}. FLOPs bound: analytic causal FLOPs of base / SDTP "
        "(pruning modules included).",
        "",
        "| tokens | prefill base ms | prefill SDTP ms | speedup | FLOPs bound | TTFT base / SDTP ms "
        "| decode tok/s base / SDTP | peak MiB base / SDTP | KV MiB base / SDTP | tokens at last layer |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        ttft = {m: 1000 * r["ttft_s"][m]["median"] for m in METHODS}
        decode = {m: r["decode_tok_s"][m]["median"] for m in METHODS}
        lines.append(
            f"| {r['tokens']} | {_ms(r['prefill_s']['base'])} | {_ms(r['prefill_s']['sdtp'])} | {r['speedup']:.2f}x "
            f"| {r['flops']['bound']:.2f}x | {_pair(ttft)} | {_pair(decode)} | {_pair(r['peak_mib'], '{:.0f}')} "
            f"| {_pair(r['kv_mib'])} | {r['last_layer_tokens']} |"
        )
    if all("components" in r for r in res["rows"]):
        lines += [
            "",
            "Where the SDTP prefill's time goes (one profiled prefill per length, `torch.profiler`; scoring = the "
            "pruning modules, selection = the keep rule and the hidden-state gather, gathers = RoPE, position ids "
            "and masks, early exit = dropped positions' last hidden states; target: scoring + selection <= 1% at 4K):",
            "",
            "| tokens | profiled prefill ms | scoring | selection | gathers | early exit | scoring + selection |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in res["rows"]:
            c = r["components"]
            share = {name.split(".")[1]: f"{100 * v['share']:.2f}%" for name, v in c["components"].items()}
            lines.append(
                f"| {r['tokens']} | {c['prefill_ms']:.1f} | {share['score']} | {share['select']} | {share['gather']} "
                f"| {share['early_exit']} | {100 * c['module_share']:.2f}% |"
            )
    check = res.get("flops_check")
    if check:
        parts = [
            f"{name} counted {check[key]['counted'] / 1e9:.3f} GFLOPs vs analytic {check[key]['analytic_full'] / 1e9:.3f} "
            f"({100 * check[key]['relative_difference']:+.4f}%)"
            for name, key in (("base", "base"), ("SDTP", "sdtp"))
        ]
        lines += [
            "",
            f"FLOPs check at {check['tokens']} tokens with `FlopCounterMode` (it counts matrix products and attention "
            f"as full, non-causal products): {'; '.join(parts)}. The table's causal model gives "
            f"{check['base']['analytic_causal'] / 1e9:.3f} / {check['sdtp']['analytic_causal'] / 1e9:.3f} GFLOPs.",
        ]
    if res.get("plots"):
        lines += ["", " ".join(f"![{name}](benchmarks/{name})" for name in res["plots"])]
    return lines
