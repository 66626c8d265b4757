"""SDTP against training-free baselines and real peers at the same budget, in one table (``sdtp bench compare``).

Rows: the trained adapter, its 5-stage "SDTP-low" variant, the training-free scorers on the same
schedule (random, recency, hidden norm, last-query attention), LLMLingua compressing the prompt to the
same prefill compute, and kvpress presses removing the same share of the KV cache (run in their own
environment). Columns: prefill compute share and measured prefill speedup, continuation fidelity on
held-out prose, accuracy on the synthetic long-context suite, and KV-cache size.

Fidelity is also measured on every genre of ``--genres`` (``data.genres``: held-out documents of
plays, novels, code, technical prose; default: those of ``DEFAULT_GENRES`` available here), each
reported on its own with 95% bootstrap intervals over windows and the paired difference of every
method against SDTP (trained) (``bench.intervals``); the per-genre machinery and its tables are
``bench.genre_fidelity``. The combined table is the first genre's.

``--model`` takes a packaged name, a local folder or a Hub id (``--adapter`` required for any but a
packaged model; kvpress runs on the default model only: ``--no-kvpress`` otherwise). ``--text-file`` /
``--dataset`` add the user's text as the genre ``user`` (the first one, alone unless ``--genres`` is
given), and it is the filler the long-context tasks hide their facts in. Results:
``<--out DIR>/compare-<model>.json`` and ``compare-<model>-quality-speed.png``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from ..architectures import model_dims
from ..data import genres as genre_registry
from ..data.tasks import is_correct
from ..zoo import DEFAULT_MODEL
from . import longcontext
from .common import UserText, adapter_source, add_model_arguments, add_text_arguments, filler_texts, load_sdtp
from .common import model_label, prose_windows, read_user_text
from .fidelity import Fidelity
from .genre_fidelity import BOOTSTRAP_SEED, DEFAULT_GENRES, LEVEL, RESAMPLES, TRAINED, genre_source, genre_summary
from .genre_fidelity import genre_windows, method_kind, pooled, render_genres, requested_genres, score_windows
from .intervals import mean_interval
from .meta import results_dir, run_meta, write_results
from .methods import Method, standard_methods
from .plotting import pyplot, save_figure

# the acceptance targets for the default SmolLM2 schedule
TARGET_DNLL_PCT = 2.0
TARGET_TOP1 = 0.95

INTERVALS = {
    "level": LEVEL, "resamples": RESAMPLES, "seed": BOOTSTRAP_SEED, "unit": "window",
    "method": "percentile bootstrap over windows; paired: the same windows resampled for both methods",
    "paired_difference": f"{TRAINED} minus the method (below zero: SDTP lower dNLL / KL, i.e. better)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_text_arguments(parser)
    parser.add_argument(
        "--genres", nargs="+", default=None, metavar="GENRE",
        help=f"genres whose held-out documents the fidelity windows are drawn from, each reported on its own "
        f"(allowed: {', '.join(genre_registry.GENRES)}; default: those of {' '.join(DEFAULT_GENRES)} available here; "
        "with --text-file/--dataset: that text alone, as the genre 'user', plus any given here)",
    )
    parser.add_argument("--windows", type=int, default=12, help="prose windows for fidelity, per genre")
    parser.add_argument("--prefix", type=int, default=2048, help="prompt tokens of each window (pruned by SDTP)")
    parser.add_argument("--continuation", type=int, default=128, help="tokens after the prompt scored against the unpruned model")
    parser.add_argument("--no-tasks", action="store_true",
                        help="skip the synthetic long-context suite (its filler prose: --text-file/--dataset if given)")
    parser.add_argument("--no-llmlingua", action="store_true", help="skip LLMLingua (needs `pip install '.[peers]'`)")
    parser.add_argument("--no-kvpress", action="store_true", help="skip kvpress (runs in its own environment)")
    longcontext.add_suite_arguments(parser)


def kept_share(sdtp, length: int) -> float:
    """Mean share of a ``length``-token prompt each layer processes under the adapter's schedule."""
    layers = model_dims(sdtp.base_model).num_layers
    return sdtp.schedule.kept_share(length, layers)


def peer_methods(sdtp, tokenizer, share: float, args, text: UserText | None = None) -> list[Method]:
    """LLMLingua at SDTP's kept share, keeping verbatim the same recent window that SDTP protects.

    One untimed compression of a training-split window (or, with the user's ``text``, a window of it)
    first: the method calibrates its budget on its first call (extra passes), which would otherwise be
    charged to the first timed window.
    """
    if args.no_llmlingua:
        return []
    from ..data.corpora import shakespeare_texts
    from .fidelity import text_windows
    from .peers.llmlingua import llmlingua_method

    window = sdtp.schedule.local_window_ratio
    method = llmlingua_method(sdtp, tokenizer, rate=share, keep_last=window)
    method.name = f"LLMLingua (same share, last {window:.0%} kept)"
    if text is None:
        warmup = text_windows(tokenizer, list(shakespeare_texts("train").values()), 1, args.prefix, seed=1)[0]
    else:
        warmup = prose_windows(tokenizer, 1, args.prefix, text, seed=1)[0]
    method.compress(tokenizer.decode(warmup[0].tolist()), "")
    return [method]


def run(args: argparse.Namespace) -> dict:
    """Run the section; writes ``compare-<model>.json`` and the plot to ``args.out``."""
    directory = results_dir(args)
    text = user_text(args)
    adapter_source(args.model, args.adapter)  # a missing --adapter fails before any text is fetched
    names = requested_genres(getattr(args, "genres", None), text)
    check_kvpress_genre(names, args)
    sources = [genre_source(name, text) for name in names]
    sdtp, tokenizer = load_sdtp(args.model, args.adapter, getattr(args, "revision", None))
    # every input is cut before the long part, so too short a text fails at once
    windows = {g.name: genre_windows(tokenizer, g, args.windows, args.prefix + args.continuation) for g in sources}
    filler = None if args.no_tasks else filler_texts(tokenizer, max(args.lengths), text)
    share = kept_share(sdtp, args.prefix)
    methods = standard_methods(sdtp) + peer_methods(sdtp, tokenizer, share, args, text)
    per_window = {}
    for name, cut in windows.items():
        print(f"fidelity: {name}: {len(cut)} windows x {len(methods)} methods (SDTP kept share {share:.3f})", flush=True)
        per_window[name] = score_windows(sdtp, cut, args.prefix, methods, tokenizer)
    fidelity = {method: pooled(values) for method, values in per_window[names[0]].items()}
    rows = [method_row(method, fidelity) for method in methods]
    add_compression_stats(rows, methods)
    genres = {g.name: genre_summary(g, methods, per_window[g.name]) for g in sources}
    base_nll = next(iter(fidelity.values())).base_nll
    tasks = None
    if not args.no_tasks:
        samples = longcontext.suite_from_args(tokenizer, args, filler)
        print(f"tasks: {len(samples)} samples x {len(methods)} methods", flush=True)
        tasks = longcontext.evaluate_tasks(sdtp, tokenizer, samples, methods)
        for row in rows:
            row["tasks"] = tasks["accuracy"][row["method"]]
            row["tasks"]["overall_interval"] = list(task_interval(tasks["generations"][row["method"]], samples)[1:])
    if not args.no_kvpress:
        del sdtp  # the kvpress environment loads its own copy of the model
        rows += kvpress_rows(args)
    label = model_label(args.model)
    results = {
        "model": label, "prefix": args.prefix, "continuation": args.continuation, "windows": args.windows,
        "base_nll": base_nll, "sdtp_kept_share": share, "rows": rows,
        "tasks": None if tasks is None else {k: v for k, v in tasks.items() if k != "accuracy"},
        "verdict": verdict(rows, genres[names[0]]["methods"]),
        "adapter": args.adapter, "text": None if text is None else text.source,
        "genre": names[0], "genres": genres, "intervals": INTERVALS,
    }
    if label != args.model:  # where a folder or Hub model came from
        results["model_source"] = args.model + (f" (revision {args.revision})" if getattr(args, "revision", None) else "")
    data = {"meta": run_meta(args.command_line), "results": results}
    write_results(f"compare-{label}", data["meta"], results, directory)
    plot(data, directory)
    return data


def method_row(method: Method, fidelity: dict[str, Fidelity]) -> dict:
    """The combined table's row of ``method`` (pooled over the first genre's windows)."""
    row = {"method": method.name, "kind": method_kind(method)}
    f = fidelity.get(method.name)
    if f is None:  # the unpruned reference
        any_f = next(iter(fidelity.values()))
        return row | {"kept_share": 1.0, "prefill_speedup": 1.0, "delta_nll_pct": 0.0, "top1": 1.0, "kl": 0.0,
                      "kv_mib": any_f.base_kv_mib}
    return row | {
        "kept_share": f.kept_share, "prefill_speedup": f.base_prefill_s / f.prefill_s,
        "delta_nll_pct": f.delta_nll_pct, "top1": f.top1, "kl": f.kl, "kv_mib": f.kv_mib,
    }


def add_compression_stats(rows: list[dict], methods: list[Method]) -> None:
    """A compressor's timed calls (every genre's windows; the first call is the untimed warm-up) into its row."""
    for row, method in zip(rows, methods):
        calls = getattr(method.compress, "stats", [])[1:]
        if calls:
            row["compression"] = {
                "calls": len(calls),
                "seconds_median": statistics.median(c.seconds for c in calls),
                "kept_share_mean": statistics.fmean(c.tokens_out / c.tokens_in for c in calls),
                "passes_mean": statistics.fmean(c.passes for c in calls),
            }


def task_interval(generations: list[str], samples: list[dict]) -> tuple[float, float, float]:
    """``(accuracy, low, high)``: the tasks mean and its 95% bootstrap interval over samples."""
    correct = [float(is_correct(text, s["key"], s["distractors"])) for text, s in zip(generations, samples)]
    return mean_interval(correct, LEVEL, RESAMPLES, BOOTSTRAP_SEED)


def check_kvpress_genre(names: list[str], args: argparse.Namespace) -> None:
    """Refuse kvpress unless the combined table's genre (the first) is the held-out plays it reads."""
    if not args.no_kvpress and names[0] != "plays":
        raise ValueError(f"--genres {' '.join(names)}: the kvpress peer reads the held-out plays only, and the "
                         f"combined table is the first genre's ({names[0]!r}); put plays first or add --no-kvpress")


def user_text(args: argparse.Namespace) -> UserText | None:
    """The user's ``--text-file`` / ``--dataset`` text, after the checks that would otherwise fail late."""
    if not args.no_kvpress:
        check_kvpress_model(args.model)
    text = read_user_text(args)
    if text is not None and not args.no_kvpress:
        raise ValueError(f"{text.source}: the kvpress peer reads the held-out plays only; add --no-kvpress")
    return text


def check_kvpress_model(model: str) -> None:
    """Refuse a ``--model`` the kvpress peer cannot run (its environment holds one packaged model)."""
    from .peers import kvpress

    if model != kvpress.MODEL:
        raise ValueError(f"--model {model}: the kvpress peer runs on {kvpress.MODEL} only; add --no-kvpress")


def kvpress_rows(args: argparse.Namespace) -> list[dict]:
    """Run the kvpress section on the same windows (its own environment) and return its presses as rows."""
    from .peers import kvpress

    check_kvpress_model(args.model)
    peer_args = argparse.Namespace(
        windows=args.windows, prefix=args.prefix, continuation=args.continuation, compression_ratio=None,
        presses=list(kvpress.DEFAULT_PRESSES), decode_tokens=32, repeats=3, env=kvpress.DEFAULT_ENV,
        no_create_env=False, command_line=args.command_line, out=str(results_dir(args)),
    )
    results = kvpress.run(peer_args)
    base = results["rows"][kvpress.BASELINE]
    return [
        {
            "method": f"kvpress {name}", "kind": "kv-cache press", "kept_share": 1.0,
            "prefill_speedup": base["prefill_s"] / row["prefill_s"], "delta_nll_pct": row["delta_nll_pct"],
            "top1": row["top1"], "kl": row["kl"], "kv_mib": row["kv_mib"],
        }
        for name, row in results["rows"].items()
        if name != kvpress.BASELINE
    ]


def verdict(rows: list[dict], paired: dict | None = None) -> dict:
    """The acceptance targets, checked on the measured rows (not asserted: reported).

    ``paired`` (a genre's ``methods`` of ``genre_summary``): SDTP beats a rival on dNLL or KL only when
    the 95% interval of SDTP minus the rival lies below zero; a rival without it (or no ``paired``):
    when SDTP's mean is lower. ``better_means`` says which rule was used.
    """
    by_name = {r["method"]: r for r in rows}
    sdtp = by_name.get(TRAINED)
    if sdtp is None:
        return {}
    rivals = [r for r in rows if r["kind"] in ("pruning", "compressor") and not r["method"].startswith("SDTP")]
    return {
        "dnll_within_target": sdtp["delta_nll_pct"] <= TARGET_DNLL_PCT,
        "top1_within_target": sdtp["top1"] >= TARGET_TOP1,
        "beats_on_dnll": {r["method"]: beats(sdtp, r, "delta_nll_pct", paired) for r in rivals},
        "beats_on_kl": {r["method"]: beats(sdtp, r, "kl", paired) for r in rivals},
        "beats_on_tasks": {
            r["method"]: sdtp["tasks"]["overall"] > r["tasks"]["overall"] for r in rivals if "tasks" in r and "tasks" in sdtp
        },
        "better_means": "paired 95% interval below zero" if paired else "lower mean",
    }


def beats(sdtp: dict, rival: dict, figure: str, paired: dict | None) -> bool:
    """Whether SDTP's ``figure`` (lower is better) beats ``rival``'s: by the paired interval where there is one."""
    diff = (paired or {}).get(rival["method"], {}).get("vs_sdtp", {}).get(figure)
    if diff is None:
        return sdtp[figure] < rival[figure]
    return diff["high"] < 0


def figure_name(res: dict) -> str:
    """The plot's file name, one per model: several models' results share one ``--out`` folder."""
    return f"compare-{res['model']}-quality-speed.png"


def plot(data: dict, directory: Path) -> None:
    """``compare-<model>-quality-speed.png`` in ``directory``: dNLL against measured prefill speedup per method."""
    plt = pyplot()
    rows = [r for r in data["results"]["rows"] if r["kind"] in ("pruning", "compressor")]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for r in rows:
        ax.scatter(r["prefill_speedup"], r["delta_nll_pct"], marker="*" if r["method"].startswith("SDTP") else "o", s=80)
        ax.annotate(r["method"], (r["prefill_speedup"], r["delta_nll_pct"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.axhline(TARGET_DNLL_PCT, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(f"measured prefill speedup at {data['results']['prefix']} tokens (compression included)")
    ax.set_ylabel("continuation dNLL (%)")
    ax.set_title("Same budget: quality vs prefill speed")
    ax.grid(alpha=0.3)
    save_figure(fig, figure_name(data["results"]), directory)


def _adapter(res: dict) -> str:
    return f"adapter {res['adapter']}" if res.get("adapter") else "shipped adapter"


def _windows_of(res: dict) -> str:
    """What the fidelity windows were cut from (results before ``text`` existed: the held-out plays)."""
    if not res.get("text"):
        genre = res.get("genre", "plays")
        return "held-out windows" if genre == "plays" else f"held-out windows of {genre}"
    return f"windows of {res['text']}" + (" (also the long-context tasks' filler)" if res.get("tasks") else "")


def render(data: dict) -> list[str]:
    res = data["results"]
    task_names = sorted(next((r["tasks"]["per_task"] for r in res["rows"] if "tasks" in r), {}))
    kinds = {r["kind"] for r in res["rows"]}
    peers = []
    if "compressor" in kinds:
        peers.append(
            f"LLMLingua compresses the prompt to the SDTP kept share ({res['sdtp_kept_share']:.2f} of the tokens per layer) "
            "with the same model as its scorer (its scoring pass is included in its prefill time)"
        )
    if "kv-cache press" in kinds:
        peers.append("kvpress presses prefill in full, then drop the same share of the KV cache")
    lines = [
        "## SDTP vs baselines and peers at the same budget",
        "",
        f"{res['model']}, {_adapter(res)}. Fidelity: {res['windows']} {_windows_of(res)}, {res['prefix']}-token prefix "
        f"prefilled by each method, next {res['continuation']} tokens fed on top (unpruned NLL {res['base_nll']:.3f}). "
        f"Pruning rows share the adapter's schedule (SDTP-low: every other stage; {res['sdtp_kept_share']:.2f} of the "
        "tokens per layer for the others) and differ only in the scorer"
        + "".join(f"; {p}" for p in peers)
        + ". Speedups are measured at the prefix length, alternating with the unpruned prefill window by window.",
        "",
        "| method | kind | prefill token share | prefill speedup | dNLL | top-1 | KL | KV MiB |"
        + "".join(f" {t} |" for t in task_names) + (" tasks mean |" if task_names else ""),
        "|---" * (8 + len(task_names) + (1 if task_names else 0)) + "|",
    ]
    for r in res["rows"]:
        cells = [r["method"], r["kind"], f"{r['kept_share']:.2f}", f"{r.get('prefill_speedup', float('nan')):.2f}x",
                 f"{r['delta_nll_pct']:+.2f}%", f"{r['top1']:.3f}", f"{r['kl']:.3f}", f"{r['kv_mib']:.1f}"]
        if task_names:
            per = r.get("tasks", {}).get("per_task", {})
            cells += [f"{per[t]:.2f}" if t in per else "-" for t in task_names]
            cells.append(f"{r['tasks']['overall']:.2f}" if "tasks" in r else "-")
        if r["method"] == TRAINED:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    for r in res["rows"]:
        c = r.get("compression")
        if c:
            lines += ["", f"{r['method']}: one compression of a {res['prefix']}-token prefix takes {c['seconds_median']:.1f} s "
                      f"(median of {c['calls']}), keeps {c['kept_share_mean']:.3f} of its tokens, {c['passes_mean']:.1f} "
                      "budget-calibration passes on average; the prefill speedup above includes all of them."]
    v = res.get("verdict") or {}
    if v and res["model"] == DEFAULT_MODEL:  # the targets are set for the default model only

        def against(key: str, what: str) -> str:
            lost = [name for name, won in v.get(key, {}).items() if not won]
            return f"better {what} than every baseline and LLMLingua: " + ("met" if not lost else f"not met (not better than {', '.join(lost)})")

        lines += [
            "",
            f"Targets (SmolLM2, default schedule), checked on these rows: dNLL within +{TARGET_DNLL_PCT:g}%: "
            f"{'met' if v['dnll_within_target'] else 'not met'}; top-1 >= {TARGET_TOP1}: "
            f"{'met' if v['top1_within_target'] else 'not met'}; {against('beats_on_dnll', 'dNLL')}; "
            f"{against('beats_on_kl', 'KL')}"
            + (f"; {against('beats_on_tasks', 'long-context accuracy')}" if v.get("beats_on_tasks") else "") + "."
            + (" Better on dNLL or KL: the paired 95% interval of SDTP minus the method (same windows) lies below zero."
               if v.get("better_means") == "paired 95% interval below zero" else ""),
        ]
    lines += render_task_intervals(res) + render_genres(res)
    lines += ["", f"![quality vs speed](benchmarks/{figure_name(res)})"]
    return lines


def render_task_intervals(res: dict) -> list[str]:
    """One line: every method's tasks mean with its 95% interval over samples (results that have them)."""
    cells = [f"{r['method']} {r['tasks']['overall']:.2f} [{r['tasks']['overall_interval'][0]:.2f}, "
             f"{r['tasks']['overall_interval'][1]:.2f}]" for r in res["rows"] if "overall_interval" in r.get("tasks", {})]
    if not cells:
        return []
    return ["", "Tasks mean with its 95% bootstrap interval over samples: " + "; ".join(cells) + "."]
