"""``data.mixture.genre_mixture``: a multi-genre training mixture over a fake genre registry (no
download) and a character tokenizer; plus ``recipes/train.py --help`` lists the mixture options."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from sdtp_adapter.data.mixture import PROSE_GENRES, genre_mixture, largest_remainder, mixture_counts
from own_model import char_tokenizer

ROOT = Path(__file__).resolve().parents[1]
LENGTH = 64
LINE = "Where the bee sucks, there suck I; in a cowslip's bell I lie.\n"


def document(genre: str, name: str, lines: int = 12) -> str:
    """A text of ``lines`` lines naming its genre and document (about 70 characters a line)."""
    return "".join(f"{genre} {name} {i}: {LINE}" for i in range(lines))


# genre -> (train documents, held-out documents); "short" is below a 64-token window
TRAIN = {
    "plays": {"as_you_like_it": document("plays", "as_you_like_it"), "lear": document("plays", "lear"),
              "short": "plays short: too short."},
    "novels": {"emma": document("novels", "emma"), "mansfield_park": document("novels", "mansfield_park")},
    "code": {"rich/text.py": document("code", "rich/text.py"), "rich/color.py": document("code", "rich/color.py")},
}
HELD = {
    "plays": {"hamlet": document("plays", "hamlet")},
    "novels": {"persuasion": document("novels", "persuasion")},
    "code": {"rich/table.py": document("code", "rich/table.py")},
}


class Guarded(dict):
    """A split's ``{document: text}`` that records every text read of a held-out document (names are free)."""

    def __init__(self, docs: dict[str, str], held: set[str], reads: list[str]):
        super().__init__(docs)
        self.held, self.reads = held, reads

    def __getitem__(self, name: str) -> str:
        if name in self.held:
            self.reads.append(name)
        return super().__getitem__(name)

    def get(self, name, default=None):
        return self[name] if name in self else default

    def values(self):
        return [self[k] for k in self]

    def items(self):
        return [(k, self[k]) for k in self]


class FakeRegistry:
    """``texts_of`` over ``TRAIN`` / ``HELD``; ``reads`` lists the held-out documents whose text was read."""

    def __init__(self, train: dict[str, dict[str, str]] = TRAIN):
        self.train, self.reads = train, []
        self.held = {name for docs in HELD.values() for name in docs}

    def __call__(self, genre: str, split: str) -> dict[str, str]:
        docs = self.train[genre] if split == "train" else HELD[genre]
        return Guarded(docs, self.held, self.reads)


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


def mix(tokenizer, genres, count=40, task_share=0.5, seed=0, registry=None) -> list[dict]:
    return genre_mixture(tokenizer, genres, count, LENGTH, 0.25, task_share, seed, texts_of=registry or FakeRegistry())


def test_counts_follow_the_weights(tokenizer):
    rows = mix(tokenizer, {"plays": 2.0, "novels": 1.0, "code": 1.0}, count=40)
    # 20 windows by 2:1:1; 20 chats over the prose genres by 2:1 -> 13.33, 6.67 -> 13, 7 (largest remainder)
    assert mixture_counts(rows) == {"plays": {"text": 10, "chat": 13}, "novels": {"text": 5, "chat": 7},
                                    "code": {"text": 5, "chat": 0}}
    assert len(rows) == 40


def test_largest_remainder():
    assert largest_remainder({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    assert largest_remainder({"a": 0.2, "b": 0.8}, 7) == {"a": 1, "b": 6}
    assert largest_remainder({"a": 3, "b": 1}, 0) == {"a": 0, "b": 0}


def test_task_share_and_list_of_genres(tokenizer):
    rows = mix(tokenizer, ["plays", "code"], count=10, task_share=0.3)
    assert mixture_counts(rows) == {"plays": {"text": 4, "chat": 3}, "code": {"text": 3, "chat": 0}}
    assert all(r["kind"] == "text" for r in mix(tokenizer, ["code"], count=6, task_share=0.0))
    assert all(r["kind"] != "text" for r in mix(tokenizer, ["novels"], count=6, task_share=1.0))


def test_deterministic_by_seed(tokenizer):
    genres = {"plays": 1.0, "novels": 1.0, "code": 0.5}
    strip = lambda rows: [(r["genre"], r["source"], r["kind"], r["input_ids"]) for r in rows]  # noqa: E731
    assert strip(mix(tokenizer, genres, seed=3)) == strip(mix(tokenizer, genres, seed=3))
    assert strip(mix(tokenizer, genres, seed=3)) != strip(mix(tokenizer, genres, seed=4))


def test_rows_have_the_length_and_a_target(tokenizer):
    rows = mix(tokenizer, ["plays", "novels", "code"], count=30)
    assert {r["kind"] for r in rows} == {"text", "passkey", "kv", "needle"}
    for row in rows:
        assert len(row["target_mask"]) == len(row["input_ids"]) and any(row["target_mask"])
        if row["kind"] == "text":
            assert len(row["input_ids"]) == LENGTH and sum(row["target_mask"]) == LENGTH // 4
            assert row["target_mask"][-1]
        else:
            assert LENGTH * 0.9 <= row["prompt_length"] <= 6 * LENGTH  # filler + instruction + facts
            assert tokenizer.decode(row["input_ids"][row["prompt_length"]:]).strip().startswith(row["answer"][:10])
        assert row["source"] in TRAIN[row["genre"]] and row["source"] != "short"


def test_chats_only_over_prose(tokenizer):
    rows = mix(tokenizer, {"code": 5.0, "plays": 1.0}, count=20)
    chats = [r for r in rows if r["kind"] != "text"]
    assert chats and {r["genre"] for r in chats} == {"plays"} and set(PROSE_GENRES) >= {"plays", "novels"}
    assert all("code rich" not in r["document"] for r in chats)
    with pytest.raises(ValueError, match="prose genre"):
        mix(tokenizer, ["code"], count=4)


def test_held_out_documents_never_read(tokenizer):
    registry = FakeRegistry()
    rows = mix(tokenizer, ["plays", "novels", "code"], count=60, registry=registry)
    assert registry.reads == []
    text = "".join(tokenizer.decode(r["input_ids"]) for r in rows)
    assert not any(name in text for name in ("hamlet", "persuasion", "rich/table.py"))


def test_a_held_out_document_in_train_is_refused(tokenizer):
    leaky = {**TRAIN, "novels": {**TRAIN["novels"], "persuasion": document("novels", "persuasion")}}
    registry = FakeRegistry(leaky)
    with pytest.raises(ValueError, match=r"held-out document\(s\) \['persuasion'\]"):
        mix(tokenizer, ["novels"], registry=registry)
    # also a registry that forgets to list it as held out: the registry's fixed list still catches it
    leaky = {**TRAIN, "plays": {**TRAIN["plays"], "macbeth": document("plays", "macbeth")}}
    with pytest.raises(ValueError, match="macbeth"):
        mix(tokenizer, ["plays"], registry=FakeRegistry(leaky))


@pytest.mark.parametrize("genres, kwargs, message", [
    (["poetry"], {}, r"\['poetry'\] are unknown; allowed: \['bible', 'code'"),
    ([], {}, "is empty"),
    ("plays", {}, "is a string"),
    (["plays", "plays"], {}, "more than once"),
    ({"plays": 0.0}, {}, "weight 0.0 of genre 'plays' is invalid"),
    ({"plays": -1}, {}, "weight -1"),
    ({"plays": float("nan")}, {}, "weight nan"),
    (["plays"], {"count": 0}, "count=0 is invalid"),
    (["plays"], {"task_share": 1.5}, "task_share=1.5 is invalid"),
    (["plays"], {"task_share": -0.1}, "task_share=-0.1 is invalid"),
])
def test_bad_input(tokenizer, genres, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mix(tokenizer, genres, **kwargs)


def test_no_document_long_enough(tokenizer):
    with pytest.raises(ValueError, match="no train document of length=5000"):
        genre_mixture(tokenizer, ["plays"], 4, 5000, 0.25, texts_of=FakeRegistry())


def test_recipe_help_lists_the_mixture_options():
    done = subprocess.run([sys.executable, str(ROOT / "recipes" / "train.py"), "--help"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    for option in ("--genres", "--genre-weights", "--task-share", "--task-kinds"):
        assert option in done.stdout


def test_recipe_refuses_bad_mixture_options_before_loading():
    done = subprocess.run([sys.executable, str(ROOT / "recipes" / "train.py"), "--output-dir", "unused", "--genres", "plays", "code",
                           "--genre-weights", "1", "--task-share", "0.5"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 2 and "--genre-weights has 1 values for 2 --genres" in done.stderr


def _recipe_settings(argv: list[str]):
    spec = importlib.util.spec_from_file_location("recipe_train", ROOT / "recipes" / "train.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe.settings(argv)


def test_recipe_defaults_reproduce_the_shipped_run_and_flags_override_them(tmp_path):
    """No flag: the shipped recipe's schedule (60 single-sample steps, the training window 0.1, the paper's loss).
    The generated SDTPConfig / TrainingArguments flags reach the run (ablations, batches, checkpoints)."""
    _, training, config = _recipe_settings(["--output-dir", str(tmp_path)])
    assert (training.steps, training.per_device_batch_size, training.save_every, training.overwrite_output_dir) == (60, 1, 0, True)
    assert (config.local_window_ratio, config.distill_loss_weight, config.lm_loss_weight) == (0.1, 0.0, 1.0)
    _, training, config = _recipe_settings([
        "--output-dir", str(tmp_path), "--steps", "400", "--per-device-batch-size", "2", "--gradient-accumulation-steps", "2",
        "--save-every", "25", "--no-overwrite-output-dir", "--lm-loss-weight", "0", "--distill-loss-weight", "1",
        "--local-window-ratio", "0.3",
    ])
    assert (training.steps, training.per_device_batch_size, training.gradient_accumulation_steps, training.save_every) == (400, 2, 2, 25)
    assert training.overwrite_output_dir is False
    assert (config.local_window_ratio, config.distill_loss_weight, config.lm_loss_weight) == (0.3, 1.0, 0.0)
    with pytest.raises(ValueError, match="distill_loss_weight"):
        _recipe_settings(["--output-dir", str(tmp_path), "--distill-loss-weight", "-1"])


def test_recipe_saves_the_models_chosen_inference_schedule_unless_its_flag_was_given(tmp_path):
    """SmolLM2: trained at keep ratio 0.9 with window 0.1, saved with the chosen 0.95 / 0.3 (zoo); a given flag
    is trained with and kept; Gemma-3 chooses only its keep ratio (0.95; the window stays as trained)."""
    from sdtp_adapter.zoo import MODELS

    spec = importlib.util.spec_from_file_location("recipe_train", ROOT / "recipes" / "train.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    args, _, config = recipe.settings(["--output-dir", str(tmp_path)])
    assert (config.keep_ratio, config.local_window_ratio) == (0.9, 0.1)
    saved = recipe.inference_config(config, args)
    chosen = MODELS["smollm2-135m-instruct"].inference_schedule
    assert (saved.keep_ratio, saved.local_window_ratio) == (chosen["keep_ratio"], chosen["local_window_ratio"]) == (0.95, 0.3)
    assert saved.to_dict() | {"keep_ratio": 0.9, "local_window_ratio": 0.1} == config.to_dict()  # nothing else changes
    args, _, config = recipe.settings(["--output-dir", str(tmp_path), "--keep-ratio", "0.8", "--local-window-ratio", "0.2"])
    assert recipe.inference_config(config, args) == config and (config.keep_ratio, config.local_window_ratio) == (0.8, 0.2)
    args, _, config = recipe.settings(["--output-dir", str(tmp_path), "--keep-ratio", "0.8"])
    assert (recipe.inference_config(config, args).keep_ratio, recipe.inference_config(config, args).local_window_ratio) == (0.8, 0.3)
    args, _, config = recipe.settings(["--output-dir", str(tmp_path), "--model", "gemma3-270m"])
    saved = recipe.inference_config(config, args)
    assert (config.keep_ratio, saved.keep_ratio) == (0.9, 0.95)
    assert saved.to_dict() | {"keep_ratio": 0.9} == config.to_dict()


def test_recipe_never_defaults_to_a_shipped_folder():
    done = subprocess.run([sys.executable, str(ROOT / "recipes" / "train.py")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2 and "--output-dir" in done.stderr and "required" in done.stderr


def test_recipe_refuses_a_repeated_or_unknown_task_kind_before_loading():
    for kinds, message in ((["kv", "kv"], "--task-kinds kv kv names a kind twice"), (["trivia"], "invalid choice: 'trivia'")):
        done = subprocess.run([sys.executable, str(ROOT / "recipes" / "train.py"), "--output-dir", "unused", "--genres", "plays", "novels",
                               "--task-kinds", *kinds], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert done.returncode == 2 and message in done.stderr, done.stderr


def test_recipe_init_adapter_must_match_the_recipe_stages(tmp_path):
    """The shipped SmolLM2 adapter fits the recipe's default stages; the tiny test adapter does not (refused
    before the model loads, naming the layers)."""
    from own_model import save_own_model

    args, _, _ = _recipe_settings(["--output-dir", str(tmp_path / "a"), "--init-adapter", "smollm2-135m-instruct"])
    assert (args.init_dir / "adapter_model.safetensors").is_file()
    own = save_own_model(tmp_path / "own")
    with pytest.raises(SystemExit):
        _recipe_settings(["--output-dir", str(tmp_path / "b"), "--init-adapter", str(own / "adapter")])
