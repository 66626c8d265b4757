"""The held-out suite against measured speed over keep ratios (issue 12's Pareto fallback), as a page and a plot.

    sdtp bench suite --adapter A --keep-ratio 0.95 --out runs/suite-r0.95      # one run per keep ratio
    sdtp bench sweep --adapter A --placements all --keep-ratios 0.97 0.95 0.9 --speed-tokens 2048 --out runs/sweep
    python recipes/suite_pareto.py runs/suite-r*/suite-*.json --sweep runs/sweep/sweep-smollm2-135m-instruct.json --out runs/pareto

Writes ``<out>/suite-pareto.md`` (the QA table, with intervals and the share of the unpruned model's accuracy
on the same prompts, and the summaries/verdicts table; each run's command and date), ``suite-pareto.png`` and
``suite-pareto.json`` (the rows). The speedup of a row is the sweep's, measured for the same scorer, layers and
keep ratio ("not measured" where the sweep has no such point).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sdtp_adapter.bench.meta import write_results
from sdtp_adapter.bench.suite_pareto import pareto_rows, plot, render
from sdtp_adapter.files import atomic_write_bytes


def read(path: Path, flag: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"{flag} {str(path)!r} is not a readable results JSON: {err}") from err
    if not isinstance(data, dict) or "results" not in data or "meta" not in data:
        raise SystemExit(f"{flag} {str(path)!r} is not a benchmark results file (no 'meta'/'results')")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suites", nargs="+", type=Path, help="suite-<model>.json files, one per keep ratio")
    parser.add_argument("--sweep", type=Path, default=None, help="the sweep-<model>.json with the measured speedups (optional)")
    parser.add_argument("--out", type=Path, required=True, help="folder for suite-pareto.md/.png/.json")
    args = parser.parse_args()
    suites = [read(p, "suite") for p in args.suites]
    sweep = read(args.sweep, "--sweep") if args.sweep else None
    try:
        rows = pareto_rows([s["results"] for s in suites], sweep["results"] if sweep else None)
    except ValueError as err:
        raise SystemExit(str(err)) from err
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, args.out)
    speed_tokens = sweep["results"]["speed_tokens"] if sweep else None
    runs = [f"- keep ratio {s['results']['schedule']['keep_ratio']:g}: `{s['meta']['command']}` ({s['meta']['date']}, {s['meta']['machine']})"
            for s in suites]
    if sweep:
        runs.append(f"- speed: `{sweep['meta']['command']}` ({sweep['meta']['date']}, {sweep['meta']['machine']})")
    page = ["# Held-out suite against measured speed", "", "![](suite-pareto.png)", "",
            "Accuracy: mean [95% interval over prompts], then the share of the unpruned model's accuracy on the same prompts.",
            "", *render(rows, speed_tokens), "", "Runs:", "", *runs, ""]
    atomic_write_bytes(args.out / "suite-pareto.md", "\n".join(page).encode())
    write_results("suite-pareto", {"suites": [s["meta"] for s in suites], "sweep": sweep["meta"] if sweep else None}, rows, args.out)
    print(f"wrote {args.out / 'suite-pareto.md'}")


if __name__ == "__main__":
    main()
