"""A user's rows (``data.sources.load_rows``) as SDTP training samples.

A training sample is ``{"input_ids": list[int], "target_mask": list[bool]}`` of equal length (what
``training.checks.check_dataset`` accepts); ``build_samples`` also keeps ``source_row``, the index of
the first raw row a sample came from, so that an error about a sample can name the user's row.

- **Plain text** (a ``text`` column, or any ``text_column``): each document is tokenised without
  special tokens, plus the tokenizer's BOS in front when the tokenizer adds one by default (as the
  model saw its documents in pre-training). With ``packing`` the documents are joined by EOS and cut
  into consecutive ``max_length`` windows; without it each document is one sample, truncated to its
  first ``max_length`` tokens. The target is the last ``tail_ratio`` share of each sample, as in
  ``data.tasks.text_window``.
- **Chats** (a ``messages`` column of ``{"role", "content"}`` lists): rendered with the tokenizer's
  chat template; the target is exactly the tokens that each assistant turn adds to the rendering
  (its content and the template's end-of-turn tokens). Each chat is one sample, never packed; a chat
  longer than ``max_length`` keeps its last ``max_length`` tokens, where the answers are.
"""

from __future__ import annotations

import bisect
import statistics
from typing import Any, Sequence

from ..data.tasks import tail_target, template_ids

ROLES = ("system", "user", "assistant", "tool")
# tokenise this many documents per call: fast tokenizers parallelise a batch, and a bounded batch
# keeps the memory of one call small on a large dataset
BATCH = 1024

Sample = tuple[list[int], list[bool], int]  # (input_ids, target_mask, source_row)


def build_samples(
    rows,
    tokenizer,
    *,
    max_length: int,
    text_column: str | None = None,
    messages_column: str = "messages",
    packing: bool = True,
    tail_ratio: float = 0.25,
    min_length: int = 1,
):
    """Turn ``rows`` into SDTP training samples.

    Every argument and every row is checked before any tokenisation, so that bad input fails at once.

    Args:
        rows: a ``datasets.Dataset`` (e.g. from ``data.sources.load_rows``).
        tokenizer: the model's Hugging Face tokenizer (with a chat template for chat data).
        max_length: the most tokens of a sample (an int >= 2).
        text_column: the column of plain texts. ``None``: ``messages_column`` if the dataset has it,
            else ``text``.
        messages_column: the column of chats (lists of ``{"role", "content"}``), used when
            ``text_column`` is ``None``.
        packing: plain text only: join the documents (separated by EOS) and cut them into
            ``max_length`` windows; ``False``: one sample per document, truncated to ``max_length``.
        tail_ratio: plain text only: the share of each sample's last tokens that is the target, in (0, 1);
            at least one token.
        min_length: samples shorter than this are dropped (the remainder of the packed stream, short
            documents, short chats). A sample also needs 2 tokens and a target token after position 0
            (position 0 predicts nothing), so shorter ones are always dropped.
    Returns:
        a ``datasets.Dataset`` with columns ``input_ids``, ``target_mask`` and ``source_row``.
    Raises:
        TypeError: ``rows`` is not a ``datasets.Dataset``.
        ValueError: an invalid argument, a missing column, a malformed row (named by its index), a
            tokenizer without a chat template for chat data, a template whose renderings of a chat's
            prefixes are not prefixes of the whole chat, or no sample left.
    """
    import datasets

    _check_options(max_length, tail_ratio, min_length, packing)
    columns = getattr(rows, "column_names", None)
    if columns is None:
        raise TypeError(f"rows must be a datasets.Dataset (see data.sources.load_rows), got {type(rows).__name__}")
    column, chat = pick_column(list(columns), text_column, messages_column)
    values = list(rows[column])  # datasets >= 4 gives a lazy Column: read it once
    if chat:
        _check_chats(values, column)
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"column {column!r} holds chats but the model's tokenizer has no chat template: "
                "use a plain-text column instead (--text-column)"
            )
        samples = _chat_samples(tokenizer, values, max_length)
    else:
        _check_texts(values, column)
        samples = _text_samples(tokenizer, values, max_length, packing, tail_ratio)
    kept = [s for s in samples if len(s[0]) >= max(min_length, 2) and any(s[1][1:])]
    if not kept:
        raise ValueError(
            f"no sample of at least min_length={min_length} tokens (and 2 at least) with a target token after "
            f"position 0 in {len(values)} row(s) of column {column!r}: lower min_length or check the data"
        )
    ids, masks, sources = zip(*kept)
    return datasets.Dataset.from_dict({"input_ids": list(ids), "target_mask": list(masks), "source_row": list(sources)})


def describe(samples) -> str:
    """One line for the CLI: ``"N samples, total T tokens, lengths min/median/max a/b/c, target tokens X%"``."""
    lengths = [len(ids) for ids in samples["input_ids"]]
    if not lengths:
        return "0 samples"
    total = sum(lengths)
    targets = sum(sum(mask) for mask in samples["target_mask"])
    median = statistics.median(lengths)
    median_text = f"{median:g}"
    return (
        f"{len(lengths)} samples, total {total} tokens, lengths min/median/max {min(lengths)}/{median_text}/{max(lengths)}, "
        f"target tokens {100 * targets / total:.1f}%"
    )


# ---------------------------------------------------------------- checks (cheap, before any tokenisation)
def _check_options(max_length: Any, tail_ratio: Any, min_length: Any, packing: Any) -> None:
    """Refuse invalid arguments, naming the field and its allowed values."""
    if not _is_int(max_length) or max_length < 2:
        raise ValueError(f"max_length={max_length!r} is invalid; allowed: an int >= 2")
    if isinstance(tail_ratio, bool) or not isinstance(tail_ratio, (int, float)) or not 0 < tail_ratio < 1:
        raise ValueError(f"tail_ratio={tail_ratio!r} is invalid; allowed: a number with 0 < tail_ratio < 1")
    if not _is_int(min_length) or not 1 <= min_length <= max_length:
        raise ValueError(f"min_length={min_length!r} is invalid; allowed: an int with 1 <= min_length <= max_length={max_length}")
    if not isinstance(packing, bool):
        raise ValueError(f"packing={packing!r} is invalid; allowed: True, False")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def pick_column(columns: list[str], text_column: str | None, messages_column: str) -> tuple[str, bool]:
    """``(column, is_chat)``: ``text_column`` if given, else ``messages_column``, else ``text`` (cheap: callers
    check the data's columns with it before loading a model)."""
    if text_column is not None:
        if text_column not in columns:
            raise ValueError(f"text_column={text_column!r} is not a column of the dataset; its columns: {columns}")
        return text_column, False
    if messages_column in columns:
        return messages_column, True
    if "text" in columns:
        return "text", False
    raise ValueError(
        f"the dataset has neither a {messages_column!r} column (chats) nor a 'text' column; its columns: {columns}. "
        "Pass --text-column with the column of plain texts"
    )


def _check_texts(values: Sequence, column: str) -> None:
    """Every value of a plain-text column is a string."""
    for i, value in enumerate(values):
        if not isinstance(value, str):
            hint = " (chats go in the messages column: leave text_column unset)" if isinstance(value, list) else ""
            raise ValueError(f"row {i}: column {column!r} holds {type(value).__name__} {_short(value)}; allowed: a string{hint}")


def _check_chats(values: Sequence, column: str) -> None:
    """Every chat is a list of messages with a known ``role`` and a string ``content``."""
    for i, messages in enumerate(values):
        if not isinstance(messages, list):
            raise ValueError(f"row {i}: column {column!r} holds {type(messages).__name__} {_short(messages)}; allowed: a list of messages")
        for j, message in enumerate(messages):
            where = f"row {i}: {column}[{j}]"
            if not isinstance(message, dict):
                raise ValueError(f"{where} is {type(message).__name__} {_short(message)}; allowed: a dict with 'role' and 'content'")
            for key in ("role", "content"):
                if key not in message:
                    raise ValueError(f"{where} lacks {key!r}; a message needs 'role' and 'content'")
            if message["role"] not in ROLES:
                raise ValueError(f"{where} has role={message['role']!r}; allowed: {', '.join(repr(r) for r in ROLES)}")
            content = message["content"]
            if not isinstance(content, str):
                # a Parquet / Arrow table fills a message's missing field with None
                raise ValueError(f"{where} has content={_short(content)} ({type(content).__name__}); allowed: a string")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- plain text
def _text_samples(tokenizer, texts: Sequence[str], max_length: int, packing: bool, tail_ratio: float) -> list[Sample]:
    """Packed windows or truncated documents of ``texts``, each with its tail as target."""
    documents = _documents(tokenizer, texts)
    if packing:
        pieces = _pack(documents, max_length, getattr(tokenizer, "eos_token_id", None))
    else:
        pieces = [(ids[:max_length], row) for row, ids in documents]
    return [(ids, tail_target(len(ids), tail_ratio), row) for ids, row in pieces]


def _documents(tokenizer, texts: Sequence[str]) -> list[tuple[int, list[int]]]:
    """``(row, ids)`` of each text with at least one token: BOS (if the tokenizer adds it) + the text's tokens."""
    bos = _default_bos(tokenizer)
    out = []
    for start in range(0, len(texts), BATCH):
        batch = list(texts[start : start + BATCH])
        for offset, ids in enumerate(tokenizer(batch, add_special_tokens=False)["input_ids"]):
            if ids:  # an empty text would add only BOS / EOS: nothing of the user's
                out.append((start + offset, bos + list(ids)))
    return out


def _default_bos(tokenizer) -> list[int]:
    """``[bos_token_id]`` if the tokenizer puts BOS in front of a text by default, else ``[]``.

    Asking the tokenizer (rather than assuming from ``bos_token_id``) matters: Qwen-style tokenizers
    define a BOS token that the models never see in front of a document.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    return [bos] if list(tokenizer("a")["input_ids"][:1]) == [bos] else []


def _pack(documents: list[tuple[int, list[int]]], max_length: int, eos: int | None) -> list[tuple[list[int], int]]:
    """Documents joined by EOS (when the tokenizer has one), cut into consecutive ``max_length`` windows.

    Returns ``(window, row)`` pairs, ``row`` being the document the window starts in (an EOS
    separator belongs to the document before it); the last window may be shorter.
    """
    stream: list[int] = []
    starts: list[int] = []  # offset of each document in the stream
    for k, (_, ids) in enumerate(documents):
        if k and eos is not None:
            stream.append(eos)
        starts.append(len(stream))
        stream.extend(ids)
    rows = [row for row, _ in documents]
    return [
        (stream[at : at + max_length], rows[bisect.bisect_right(starts, at) - 1])
        for at in range(0, len(stream), max_length)
    ]


# ---------------------------------------------------------------- chats
def _chat_samples(tokenizer, chats: Sequence[list[dict]], max_length: int) -> list[Sample]:
    """One sample per chat with an assistant turn: its last ``max_length`` tokens, the assistant tokens as target."""
    answered = [row for row, messages in enumerate(chats) if any(m["role"] == "assistant" for m in messages)]
    if not answered:  # a chat without an answer has nothing to learn from
        raise ValueError(f"none of the {len(chats)} chat(s) has an 'assistant' message: there is no target to train on")
    out = []
    for row in answered:
        ids, mask = _chat_ids_and_mask(tokenizer, chats[row], row)
        out.append((ids[-max_length:], mask[-max_length:], row))  # keep the end: the answers
    return out


def _chat_ids_and_mask(tokenizer, messages: list[dict], row: int) -> tuple[list[int], list[bool]]:
    """The chat's tokens and which of them the assistant turns add.

    Assistant turn ``i`` owns the tokens between the rendering of ``messages[:i]`` with the generation
    prompt and the rendering of ``messages[:i + 1]``. This needs no knowledge of the template, only that
    each rendering is a prefix of the whole chat's, which is checked.
    """
    full = _render(tokenizer, messages, row)
    mask = [False] * len(full)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = _render(tokenizer, messages[:i], row, add_generation_prompt=True)
        end = full if i + 1 == len(messages) else _render(tokenizer, messages[: i + 1], row)
        for part in (start, end):
            if full[: len(part)] != part:
                raise ValueError(
                    f"row {row}: the chat template is not prefix-stable (the rendering of the first {i} or {i + 1} "
                    "messages is not the start of the whole chat's), so the assistant tokens cannot be found; "
                    "use a plain-text column instead (--text-column)"
                )
        if len(end) <= len(start):
            raise ValueError(f"row {row}: assistant message {i} adds no token after the generation prompt; cannot mark it as target")
        mask[len(start) : len(end)] = [True] * (len(end) - len(start))
    return full, mask


def _render(tokenizer, messages: list[dict], row: int, add_generation_prompt: bool = False) -> list[int]:
    """The token ids of ``messages`` under the tokenizer's chat template (a template error names the row)."""
    try:
        encoded = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    except Exception as err:  # noqa: BLE001 - templates raise jinja2 errors or their own raise_exception
        raise ValueError(f"row {row}: the chat template cannot render {len(messages)} message(s): {type(err).__name__}: {err}") from err
    return list(template_ids(encoded))
