"""A user's own model on disk, as ``sdtp bench --model FOLDER --adapter FOLDER`` reads it: a tiny random
Llama saved with ``save_pretrained`` next to a real fast tokenizer (one token per character, ids < 128),
an adapter saved for it, and a plain-text file. No download; about a second to write."""

from __future__ import annotations

from pathlib import Path

from conftest import tiny_llama
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from sdtp_adapter import SDTPConfig, get_sdtp_model

STAGES = dict(prune_layers=[2, 4, 6], keep_ratio=0.5, protected_first=2, local_window_ratio=0.05, pruner_hidden_size=32)
PROSE = "the quick brown fox jumps over the lazy dog\n" * 10  # 440 characters = 440 tokens


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character: printable ASCII then Latin-1 on ids 4-127; pad 0, bos 1, eos 2, unk 3."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for i in range(4, 128):
        vocab[chr(0x20 + i - 4) if i < 99 else chr(0xC0 + i - 99)] = i
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def save_own_model(root: Path) -> Path:
    """Write ``root/tiny-llama`` (model + tokenizer), ``root/adapter`` and ``root/prose.txt``; returns ``root``."""
    model = tiny_llama()
    model.save_pretrained(root / "tiny-llama")
    char_tokenizer().save_pretrained(root / "tiny-llama")
    get_sdtp_model(model, SDTPConfig(**STAGES)).save_pretrained(root / "adapter")
    (root / "prose.txt").write_text(PROSE)
    return root


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """``{path: (size, mtime_ns)}`` of every file under ``folder`` and of ``folder``'s page next to it."""
    files = [p for p in folder.rglob("*") if p.is_file()] + [folder.parent / f"{folder.name}.md"]
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.exists()}
