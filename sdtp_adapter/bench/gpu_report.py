"""One markdown section (``gpu-speed.md``) and a summary JSON from the speed JSONs of the GPU preset.

    python -m sdtp_adapter.bench.gpu_report OUT_DIR --models smollm2-135m-instruct llama3.2-1b llama3.1-8b

Reads ``OUT_DIR/speed-<model>-cuda.json`` (or ``speed-<model>.json`` for a CPU run) per model, writes
``OUT_DIR/gpu-speed.md`` (one table per shape: tokens, base / SDTP prefill ms, speedup, FLOPs
bound, decode tok/s, KV MiB; device, versions, date, commands) and ``OUT_DIR/gpu-speed.json``
(the same rows plus every target, met or missed). Targets are benchmark goals from issue 14, not tests.
Only JSON is read here: no torch import, so it runs in seconds.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

MD_NAME, JSON_NAME = "gpu-speed.md", "gpu-speed.json"
DECODE_TOLERANCE = 0.05  # SDTP decode tok/s may be at most 5% below the base's


@dataclass(frozen=True)
class Target:
    """Prefill speedup >= ``minimum`` at every measured length in ``[tokens_from, tokens_to]``."""

    model: str
    minimum: float
    tokens_from: int
    tokens_to: int | None = None  # None: no upper end

    def text(self) -> str:
        where = f"at {self.tokens_from}" if self.tokens_to == self.tokens_from else f"from {self.tokens_from}"
        return f"speedup >= {self.minimum:.1f}x {where} tokens"


TARGETS = (
    Target("llama3.2-1b", 1.0, 1024),
    Target("llama3.1-8b", 1.0, 1024),
    Target("llama3.1-8b", 1.5, 4096, 4096),
    Target("llama3.1-8b", 1.8, 32768, 32768),
    Target("smollm2-135m-instruct", 1.0, 4096),
)


def find_results(directory: Path, model: str) -> dict | None:
    """The speed JSON of ``model`` in ``directory`` (the CUDA section first), or None."""
    for name in (f"speed-{model}-cuda.json", f"speed-{model}.json"):
        path = directory / name
        if path.is_file():
            return json.loads(path.read_text())
    return None


def check_targets(model: str, rows: list[dict]) -> list[dict]:
    """Every target of ``model``: ``{"target", "status": met|missed|not measured, "values"}``."""
    out = []
    for target in (t for t in TARGETS if t.model == model):
        hits = [r for r in rows if r["tokens"] >= target.tokens_from and (target.tokens_to is None or r["tokens"] <= target.tokens_to)]
        values = {r["tokens"]: round(r["speedup"], 3) for r in hits}
        status = "not measured" if not hits else ("met" if min(values.values()) >= target.minimum else "missed")
        out.append({"target": target.text(), "status": status, "values": values, **asdict(target)})
    ratios = {r["tokens"]: round(r["decode_tok_s"]["sdtp"]["median"] / r["decode_tok_s"]["base"]["median"], 3) for r in rows}
    met = bool(ratios) and min(ratios.values()) >= 1 - DECODE_TOLERANCE
    out.append({"target": f"decode tok/s SDTP >= {1 - DECODE_TOLERANCE:.2f} x base at every length",
                "status": "met" if met else ("missed" if ratios else "not measured"), "values": ratios})
    return out


def _ms(stats: dict) -> str:
    return f"{1000 * stats['median']:.1f} [{1000 * stats['min']:.1f}-{1000 * stats['max']:.1f}]"


def shape_lines(res: dict, targets: list[dict]) -> list[str]:
    """Markdown for one shape: heading, what ran, table, targets."""
    lines = [
        f"### {res['model']}",
        "",
        f"{res['upstream']}; {res['dtype']}, {res['attention']}, {res['weights']}; pruning modules: {res['adapter']}, "
        f"stages {res['stages']}, keep ratio {res['keep_ratio']} per stage.",
        "",
        "| tokens | base ms | SDTP ms | speedup | FLOPs bound | decode tok/s base / SDTP | KV MiB base / SDTP "
        "| scoring + selection, % of SDTP prefill |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        dec, kv = r["decode_tok_s"], r["kv_mib"]
        module = f"{100 * r['components']['module_share']:.2f}%" if "components" in r else "-"
        lines.append(
            f"| {r['tokens']} | {_ms(r['prefill_s']['base'])} | {_ms(r['prefill_s']['sdtp'])} | {r['speedup']:.2f}x "
            f"| {r['flops']['bound']:.2f}x | {dec['base']['median']:.1f} / {dec['sdtp']['median']:.1f} "
            f"| {kv['base']:.1f} / {kv['sdtp']:.1f} | {module} |"
        )
    lines.append("")
    for t in targets:
        values = ", ".join(f"{k}: {v:.2f}" for k, v in t["values"].items())
        lines.append(f"- target {t['target']}: **{t['status']}**" + (f" ({values})" if values else ""))
    return lines


def write(directory: Path, models: list[str], command: str = "") -> tuple[Path, Path]:
    """Write ``gpu-speed.md`` and ``gpu-speed.json`` into ``directory`` from the models' speed JSONs."""
    found = {m: find_results(directory, m) for m in models}
    present = {m: d for m, d in found.items() if d is not None}
    if not present:
        raise FileNotFoundError(f"no speed-<model>[-cuda].json for any of {models} in {directory}")
    first = next(iter(present.values()))
    meta, res0 = first["meta"], first["results"]
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    lines = [
        f"## Speed on GPU: random-init shapes ({meta.get('machine', res0['device'])})",
        "",
        f"- date: {meta.get('date', '?')}; device {res0['device']}; {meta.get('platform', '')}, Python {meta.get('python', '?')}",
        f"- versions: {versions}",
        f"- command: `{command}`" if command else "- command: see each shape",
        "",
        "Random weights and random tokens: timings depend on the shapes only, not on values. Each of "
        f"{res0['repeats']} rounds (after {res0['warmup']} warm-up) runs one greedy generation of the base and one "
        f"of SDTP back to back: prefill (`logits_to_keep=1`, synchronized), then {res0['decode_tokens']} one-token "
        "decode steps on the prefilled cache. Medians, min-max in brackets. FLOPs bound: analytic causal FLOPs "
        "base / SDTP (pruning modules included). The Llama shapes have no trained adapter: SDTP runs fresh, "
        "untrained modules from `SDTPConfig()` (budgets are fixed counts, so they prune as much as trained ones).",
        "",
    ]
    summary = {"meta": meta, "command": command, "missing": [m for m in models if m not in present], "shapes": {}}
    for model in models:  # the preset's order, missing shapes in place
        data = present.get(model)
        if data is None:
            lines += [f"### {model}", "", "not measured (no results file: the run failed or was cut short)", ""]
            continue
        res = data["results"]
        targets = check_targets(model, res["rows"])
        lines += shape_lines(res, targets) + ["", f"- {model} command: `{data['meta'].get('command', '')}`", ""]
        summary["shapes"][model] = {
            "rows": [{"tokens": r["tokens"], "base_ms": 1000 * r["prefill_s"]["base"]["median"],
                      "sdtp_ms": 1000 * r["prefill_s"]["sdtp"]["median"], "speedup": r["speedup"],
                      "flops_bound": r["flops"]["bound"], "decode_tok_s": {m: r["decode_tok_s"][m]["median"] for m in ("base", "sdtp")},
                      "kv_mib": r["kv_mib"]} for r in res["rows"]],
            "targets": targets,
        }
    md, js = directory / MD_NAME, directory / JSON_NAME
    md.write_text("\n".join(lines).rstrip() + "\n")
    js.write_text(json.dumps(summary, indent=1) + "\n")
    return md, js


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sdtp_adapter.bench.gpu_report", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="folder with the speed-<model>[-cuda].json files")
    parser.add_argument("--models", nargs="+", required=True, help="models in table order")
    parser.add_argument("--command", default="", help="the preset command, shown in the header")
    args = parser.parse_args(argv)
    md, js = write(args.directory, args.models, args.command)
    print(f"wrote {md} and {js}")


if __name__ == "__main__":
    main()
