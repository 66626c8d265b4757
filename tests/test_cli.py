"""The ``sdtp`` command line: fast help, every option documented, user errors in one line (exit 2)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from sdtp_adapter import cli, zoo


def all_parsers(parser: argparse.ArgumentParser, path: str = "sdtp"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from all_parsers(sub, f"{path} {name}")


def test_help_imports_neither_torch_nor_transformers():
    code = (
        "import sys\nfrom sdtp_adapter.cli import build_parser\n"
        "for argv in (['--help'], ['demo', '--help'], ['fetch-model'], ['bench', '--help']):\n"
        "    build_parser(argv).format_help()\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_option_of_every_command_has_help_with_its_default():
    for path, parser in all_parsers(cli.build_parser()):  # argv=None: every bench section's options too
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help, f"`{path}` option {name} has no help"
            if action.nargs != 0 and action.default not in (None, argparse.SUPPRESS):
                assert "default" in parser.formatter_class(path)._get_help_string(action), f"`{path}` {name}: no default shown"
        assert "--debug" in text


def test_model_names_are_choices():
    parser = dict(all_parsers(cli.build_parser()))
    for path in ("sdtp demo", "sdtp fetch-model"):
        assert all(name in parser[path].format_help() for name in zoo.MODELS), path


def one_line_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_unknown_model_is_one_line_listing_the_models(capsys):
    err = one_line_error(capsys, ["fetch-model", "bogus"])
    assert "'bogus'" in err and all(name in err for name in zoo.MODELS)


def test_bad_number_is_one_line(capsys):
    err = one_line_error(capsys, ["demo", "--tokens", "0"])
    assert "--tokens" in err and ">= 1" in err


def test_missing_adapter_fails_before_loading_the_model(capsys, monkeypatch):
    from sdtp_adapter import demo

    monkeypatch.setattr(demo, "load_model", lambda *a, **k: pytest.fail("loaded the model first"))
    err = one_line_error(capsys, ["demo", "--adapter", "/nonexistent/adapter"])
    assert "/nonexistent/adapter" in err and all(name in err for name in zoo.shipped_adapter_names())


def test_debug_shows_the_traceback_anywhere_on_the_line(monkeypatch):
    for argv in (["--debug", "demo", "--adapter", "/nonexistent"], ["demo", "--adapter", "/nonexistent", "--debug"]):
        with pytest.raises(FileNotFoundError, match="/nonexistent"):
            cli.main(argv)


def test_fetch_model_prints_only_the_folder_on_stdout(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(zoo, "model_path", lambda name: tmp_path / name)
    cli.main(["fetch-model", "gemma3-270m"])
    assert capsys.readouterr().out == f"{tmp_path / 'gemma3-270m'}\n"


def test_only_the_requested_bench_section_is_built():
    assert cli._bench_section(["bench", "sweep", "--windows", "2"]) == "sweep"
    assert cli._bench_section(["--debug", "bench", "--help"]) == ""
    assert cli._bench_section(["demo", "--tokens", "9"]) == ""
    args = cli.build_parser(["bench", "sweep", "--windows", "2"]).parse_args(["bench", "sweep", "--windows", "2"])
    assert (args.section, args.windows) == ("sweep", 2)


@pytest.mark.parametrize("section", [["speed"], ["compare", "--no-kvpress"], ["sweep"], ["tasks"], ["observations"], ["compose"], ["plan-speed"], ["suite", "--lengths", "1024"]])
def test_bench_on_a_model_without_shipped_adapter_needs_adapter_before_loading(capsys, monkeypatch, tmp_path, section):
    from transformers import LlamaConfig

    from sdtp_adapter import loading

    LlamaConfig(num_hidden_layers=2).save_pretrained(tmp_path / "my-model")
    monkeypatch.setattr(loading, "load_base", lambda *a, **k: pytest.fail("loaded the model first"))
    monkeypatch.chdir(tmp_path)
    err = one_line_error(capsys, ["bench", *section, "--model", str(tmp_path / "my-model")])
    assert f"--model {str(tmp_path / 'my-model')!r} is not a packaged model" in err and "pass --adapter" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-model"]  # no results folder either


def test_bench_report_of_a_missing_folder_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    err = one_line_error(capsys, ["bench", "report", "--out", "nothing-here"])
    assert "--out 'nothing-here' is not a folder of benchmark results" in err


def test_bench_help_says_where_results_go():
    parser = dict(all_parsers(cli.build_parser()))
    assert "./sdtp-bench/" in parser["sdtp bench"].description  # format_help() wraps at its hyphen
    for section in ("speed", "compare", "tasks", "kvpress", "sweep", "observations", "report"):
        assert "--out DIR" in parser[f"sdtp bench {section}"].format_help(), section
    for section in ("speed", "compare"):
        assert "--text-file" in parser[f"sdtp bench {section}"].format_help(), section
