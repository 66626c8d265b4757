"""Refresh a shipped adapter's model card (README.md, eval_results.json) from the benchmark results.

    sdtp bench compare --out docs/benchmarks
    sdtp bench speed --out docs/benchmarks
    python recipes/model_card.py
    python recipes/model_card.py --model gemma3-270m

It reads the repository's results, ``docs/benchmarks/`` (``bench.meta.REPO_RESULTS_DIR``). The card quotes the comparison table (fidelity, long-context accuracy, baselines and peers at the
same budget), the speed table and, once it has run, the held-out suite (with its target verdicts), each with the machine, versions, command and date it was measured with.
"""

from __future__ import annotations

import argparse
import json

from sdtp_adapter.bench import compare, speed, suite
from sdtp_adapter.bench.meta import REPO_RESULTS_DIR, meta_lines, read_results
from sdtp_adapter.files import atomic_write_bytes
from sdtp_adapter.hub import write_model_card
from sdtp_adapter.persistence import load_adapter
from sdtp_adapter.zoo import DEFAULT_MODEL, MODELS, SHIPPED_ADAPTERS


# the recipe commands that trained each shipped adapter (recipes/train.py writes the model's chosen inference
# schedule, zoo.PackagedModel.inference_schedule, into it); docs/training.md has the measured times
TRAIN_COMMANDS = {
    "smollm2-135m-instruct": "python recipes/train.py --output-dir DIR --genres plays novels code technical --length 1024 "
                             "--samples 192 --steps 200 --per-device-batch-size 2 --save-every 10",
    "gemma3-270m": "python recipes/train.py --output-dir DIR --model gemma3-270m --genres plays novels code technical "
                   "--length 4096 --samples 32 --steps 24 --save-every 4 --seed 1",
}


def measured_keep_ratio(results: dict, config) -> float | None:
    """The per-stage keep ratio a section's results were measured at (compare: from SDTP's kept share)."""
    if "schedule" in results:  # suite
        return results["schedule"]["keep_ratio"]
    if "keep_ratio" in results:  # speed
        return results["keep_ratio"]
    if "sdtp_kept_share" in results:  # compare: the share the adapter's own schedule gives at its prefix
        layers = config.num_hidden_layers
        share = config.schedule(layers).kept_share(results["prefix"], layers)
        return config.keep_ratio if abs(share - results["sdtp_kept_share"]) < 1e-3 else None
    return None


def section(name: str, render, command: str, config) -> list[str]:
    """The card's lines for one results file; refused when it was measured on another budget than the adapter's."""
    data = read_results(name, REPO_RESULTS_DIR)
    if data is None:
        raise ValueError(f"docs/benchmarks/{name}.json is missing: run `{command}` first")
    measured = measured_keep_ratio(data["results"], config)
    if measured is None or abs(measured - config.keep_ratio) > 1e-9:
        raise ValueError(f"docs/benchmarks/{name}.json was measured at keep ratio {measured} (None: another schedule), "
                         f"the adapter is configured at {config.keep_ratio}: rerun `{command}`")
    body = [line.replace("## ", "### ", 1) for line in render(data) if not line.startswith("![")]
    return body + ["", *meta_lines(data["meta"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS))
    args = parser.parse_args()
    folder = SHIPPED_ADAPTERS / args.model
    model_flag = "" if args.model == DEFAULT_MODEL else f" --model {args.model}"
    flag = model_flag + " --out docs/benchmarks"  # the bench commands write the repository's results
    config, _ = load_adapter(folder)
    lines = section(f"compare-{args.model}", compare.render, f"sdtp bench compare{flag}", config)
    lines += ["", *section(f"speed-{args.model}", speed.render, f"sdtp bench speed{flag}", config)]
    if read_results(f"suite-{args.model}", REPO_RESULTS_DIR) is not None:  # the held-out suite, once it has run
        lines += ["", *section(f"suite-{args.model}", suite.render, f"sdtp bench suite{flag} --lm-eval", config)]
    write_model_card(
        folder,
        config,
        "\n".join(lines),
        f"`{TRAIN_COMMANDS[args.model]}` (docs/training.md: data, schedule, time), then "
        f"`sdtp bench compare{flag}`, `sdtp bench speed{flag}`, `sdtp bench suite{flag} --lm-eval` and "
        f"`python recipes/model_card.py{model_flag}`.",
        base_weights=MODELS[args.model].upstream.split(" (", 1)[-1].rstrip(")") + ", dequantised to fp32",
    )
    rows = read_results(f"compare-{args.model}", REPO_RESULTS_DIR)["results"]["rows"]
    atomic_write_bytes(folder / "eval_results.json", (json.dumps(rows, indent=1) + "\n").encode())
    print(f"wrote {folder / 'README.md'}")


if __name__ == "__main__":
    main()
