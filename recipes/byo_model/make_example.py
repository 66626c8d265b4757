"""Make the worked example's inputs: a small Qwen2 checkpoint in a local folder and a jsonl chat dataset.

The model stands in for a user's own checkpoint: a Qwen2 built from its config (random weights, no
download) with a byte-level ChatML tokenizer, saved with ``save_pretrained`` like any fine-tuned model.
The chats are generated locally: a document of numbered facts, a question about one of them, the answer.

    python recipes/byo_model/make_example.py OUT            # OUT/model, OUT/chats.jsonl, OUT/document.txt
    python recipes/byo_model/make_example.py OUT --tiny     # a 4-layer, 64-wide model (the test suite's)

Then follow docs/training.md "Worked example: your own model and data".
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = ("amber", "birch", "cobalt", "delta", "ember", "falcon", "garnet", "harbor", "indigo", "juniper")


def byte_tokenizer(adds_bos: bool = False, chat_template: str | None = CHATML):
    """One token per UTF-8 byte (ids 0-255, so decoding is exact), then <s>, </s>, <|im_start|>, <|im_end|>;
    ``adds_bos``: the tokenizer puts <s> in front of every text, as Llama's does (Qwen's does not)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for special in ("<s>", "</s>", "<|im_start|>", "<|im_end|>"):
        vocab[special] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    if adds_bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="</s>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def make_model(folder: Path, tiny: bool) -> None:
    """A Qwen2 checkpoint with the byte tokenizer, saved like a user's fine-tuned model."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = byte_tokenizer()
    size = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4) if tiny else \
        dict(hidden_size=256, intermediate_size=704, num_hidden_layers=12, num_attention_heads=8)
    config = Qwen2Config(vocab_size=len(tokenizer), num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, **size)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def make_chats(path: Path, count: int, facts: int, seed: int = 0) -> None:
    """``count`` chats: a user turn with ``facts`` numbered facts and a question, the assistant's answer."""
    rng = random.Random(seed)
    with path.open("w") as fh:
        for _ in range(count):
            values = {f"{rng.choice(WORDS)}-{i}": rng.randrange(1000, 10000) for i in range(facts)}
            key = rng.choice(list(values))
            document = "\n".join(f"The code of {k} is {v}." for k, v in values.items())
            messages = [
                {"role": "user", "content": f"{document}\n\nWhat is the code of {key}?"},
                {"role": "assistant", "content": f"The code of {key} is {values[key]}."},
            ]
            fh.write(json.dumps({"messages": messages}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to create")
    parser.add_argument("--tiny", action="store_true", help="a 4-layer, 64-wide model and short chats (tests)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    make_model(args.out / "model", args.tiny)
    make_chats(args.out / "chats.jsonl", count=16 if args.tiny else 64, facts=8 if args.tiny else 40)
    rng = random.Random(1)
    text = " ".join(f"The code of {rng.choice(WORDS)} is {rng.randrange(1000, 10000)}." for _ in range(400 if args.tiny else 4000))
    (args.out / "document.txt").write_text(text + "\n")
    print(f"wrote {args.out / 'model'}, {args.out / 'chats.jsonl'} and {args.out / 'document.txt'}")


if __name__ == "__main__":
    main()
