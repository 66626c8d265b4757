"""Choose the protected local window of a trained adapter on TRAINING-split data (never the held-out plays).

    python recipes/choose_local_window.py                       # SmolLM2, windows 0.1 0.2 0.3
    python recipes/choose_local_window.py --ratios 0.1 0.3 --tasks

For each ratio: continuation fidelity of the trained modules and of the recency scorer (8 training-split
windows, 2,048-token prefix + 128) and, with ``--tasks``, long-context accuracy on a suite generated from
training-split plays. The budgets per stage do not depend on the window (it counts inside them), so
speed is unchanged. Results are printed; docs/training.md records the run behind the shipped value.
"""

from __future__ import annotations

import argparse

from sdtp_adapter.bench import longcontext
from sdtp_adapter.bench.common import add_model_arguments, load_sdtp
from sdtp_adapter.bench.fidelity import compare_methods, text_windows
from sdtp_adapter.bench.methods import Method
from sdtp_adapter.data.corpora import shakespeare_texts
from sdtp_adapter.pruning.scorers import recency_scorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--tasks", action="store_true", help="also run the task suite on training-split plays (seed 11)")
    args = parser.parse_args()
    sdtp, tokenizer = load_sdtp(args.model, args.adapter)
    train_texts = list(shakespeare_texts("train").values())
    windows = text_windows(tokenizer, train_texts, args.windows, 2048 + 128, seed=7)
    samples = longcontext.task_suite(tokenizer, train_texts, longcontext.DEFAULT_LENGTHS, longcontext.DEFAULT_DEPTHS,
                                     longcontext.DEFAULT_PER_CELL, 11, longcontext.DEFAULT_TASKS) if args.tasks else []
    for ratio in args.ratios:
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"--ratios: {ratio} must be in [0, 1)")
        with sdtp.use_schedule(local_window_ratio=ratio):
            fidelity = compare_methods(sdtp, windows, 2048, [Method("SDTP"), Method("recency", scorer=recency_scorer)])
            for name, f in fidelity.items():
                print(f"window {ratio}: {name}: dNLL {f.delta_nll_pct:+.2f}%  top-1 {f.top1:.3f}  KL {f.kl:.4f}", flush=True)
            if samples:
                accuracy = longcontext.evaluate_tasks(sdtp, tokenizer, samples, [Method("SDTP")])["accuracy"]["SDTP"]
                print(f"window {ratio}: SDTP long-context accuracy {accuracy['overall']:.3f} {accuracy['per_task']}", flush=True)


if __name__ == "__main__":
    main()
