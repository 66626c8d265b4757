"""``Explanation``: which tokens of one prompt survived each pruning stage, with the scores that chose them.

Plain Python (no torch), so the renderers and the JSON round trip work without a model. ``run.explain``
fills it from one pruned prefill.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..files import CorruptedFileError, atomic_write_bytes, read_json_object

FORMAT = "sdtp-explain/1"  # the JSON's "format" field: bumped when a field changes meaning


@dataclass
class Explanation:
    """One pruned prefill of one prompt of ``N`` tokens, stage by stage.

    Positions are the prompt's token indices ``0 .. N-1``. Stage ``s`` prunes right before decoder layer
    ``stage_layers[s]``: the tokens that reached it (``scored_positions[s]``) were scored, and
    ``kept_positions[s]`` went on to that layer and the next ones.

    Attributes:
        input_ids: ``[N]`` the prompt's token ids.
        num_layers: decoder layers of the model.
        stage_layers: ``[S]`` stage layer indices, increasing.
        scored_positions: ``S`` ascending lists: the positions scored at each stage (stage 0: all ``N``;
            stage ``s``: ``kept_positions[s - 1]``).
        scores: ``S`` lists aligned with ``scored_positions`` (higher = keep; ``nan`` if the scorer gave NaN).
        kept_positions: ``S`` ascending lists: the positions that survived each stage.
        protected: ascending positions that are never pruned (first tokens and local window).
        last_layer: ``[N]`` per token, the first layer it did not enter: the stage layer that dropped it
            (layers ``0 .. last_layer - 1`` processed it), ``num_layers`` for a token that survived every stage.
        tokens: ``[N]`` each token decoded on its own, or None without a tokenizer.
        highlight: ascending positions to mark (the CLI's ``--highlight`` text, the demo's inserted fact).
        highlight_text: what ``highlight`` marks.
        schedule: ``keep_ratio``, ``protected_first``, ``local_window_ratio`` of the schedule used.
        meta: free-form provenance (model, adapter, source of the prompt).
    """

    input_ids: list[int]
    num_layers: int
    stage_layers: list[int]
    scored_positions: list[list[int]]
    scores: list[list[float]]
    kept_positions: list[list[int]]
    protected: list[int]
    last_layer: list[int]
    tokens: list[str] | None = None
    highlight: list[int] = field(default_factory=list)
    highlight_text: str | None = None
    schedule: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, stages = len(self.input_ids), len(self.stage_layers)
        for name in ("scored_positions", "scores", "kept_positions"):
            if len(getattr(self, name)) != stages:
                raise ValueError(f"Explanation.{name} has {len(getattr(self, name))} stages; expected {stages} (one per stage layer)")
        for s, (positions, scores) in enumerate(zip(self.scored_positions, self.scores)):
            if len(positions) != len(scores):
                raise ValueError(f"Explanation.scores[{s}] has {len(scores)} values for {len(positions)} scored positions")
        for name, size in (("last_layer", n), ("tokens", n)):
            value = getattr(self, name)
            if value is not None and len(value) != size:
                raise ValueError(f"Explanation.{name} has {len(value)} entries; expected {size} (one per token)")
        for s, layer in enumerate(self.stage_layers):  # the per-stage lists and last_layer tell one story
            if (set(self.scored_positions[s]) != {p for p, x in enumerate(self.last_layer) if x >= layer}
                    or set(self.kept_positions[s]) != {p for p, x in enumerate(self.last_layer) if x > layer}):
                raise ValueError(f"Explanation.last_layer disagrees with scored_positions/kept_positions at stage {s} (layer {layer})")
        if any(not 0 <= p < n for p in self.highlight):
            raise ValueError(f"Explanation.highlight={self.highlight} holds positions outside [0, {n})")

    # ------------------------------------------------------------------ views
    @property
    def length(self) -> int:
        """``N``, tokens in the prompt."""
        return len(self.input_ids)

    @property
    def kept_counts(self) -> list[int]:
        """Tokens that survived each stage."""
        return [len(kept) for kept in self.kept_positions]

    def stage_scores(self, stage: int) -> dict[int, float]:
        """``{position: score}`` of the tokens that reached stage ``stage`` (an index into ``stage_layers``)."""
        return dict(zip(self.scored_positions[stage], self.scores[stage]))

    def surviving(self, positions: list[int]) -> list[int]:
        """How many of ``positions`` survived each stage (e.g. the tokens of an inserted fact)."""
        wanted = set(positions)
        return [len(wanted.intersection(kept)) for kept in self.kept_positions]

    def find_text(self, text: str) -> list[int]:
        """Positions of the tokens overlapping the first occurrence of ``text`` in the joined ``tokens``.

        Raises:
            ValueError: no tokens were recorded, or ``text`` does not occur in them.
        """
        if self.tokens is None:
            raise ValueError("this Explanation has no tokens (explain without a tokenizer): cannot find text in it")
        joined = "".join(self.tokens)
        start = joined.find(text) if text else -1
        if start < 0:
            raise ValueError(f"highlight text {text!r} does not occur in the prompt's decoded tokens")
        end, out, offset = start + len(text), [], 0
        for position, token in enumerate(self.tokens):
            if offset < end and offset + len(token) > start:
                out.append(position)
            offset += len(token)
        return out

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        """A JSON-ready dict, compact: the per-stage position lists are left out (they follow from
        ``last_layer``: stage ``s`` scored the positions ``p`` with ``last_layer[p] >= stage_layers[s]`` and kept
        those with ``last_layer[p] > stage_layers[s]``), ``scores[s]`` lists the scored positions' scores in
        increasing position order, rounded to 3 decimals (``null`` for NaN)."""
        data = {"format": FORMAT, **asdict(self)}
        del data["scored_positions"], data["kept_positions"]
        data["scores"] = [[round(x, 3) if math.isfinite(x) else None for x in stage] for stage in self.scores]
        data["kept_counts"] = self.kept_counts  # derived, for readers of the file
        if self.highlight:
            data["highlight_surviving"] = self.surviving(self.highlight)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Explanation":
        """The inverse of ``to_dict`` (scores as rounded there)."""
        if data.get("format") != FORMAT:
            raise ValueError(f"format={data.get('format')!r} is not an explain file; expected {FORMAT!r}")
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        last = data["last_layer"]
        fields["scored_positions"] = [[p for p, x in enumerate(last) if x >= layer] for layer in data["stage_layers"]]
        fields["kept_positions"] = [[p for p, x in enumerate(last) if x > layer] for layer in data["stage_layers"]]
        fields["scores"] = [[math.nan if x is None else float(x) for x in stage] for stage in data["scores"]]
        return cls(**fields)

    def save_json(self, path: str | Path) -> Path:
        """Write ``to_dict()`` to ``path`` atomically (compact: one line per field)."""
        path = Path(path)
        lines = ",\n".join(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False, separators=(',', ':'))}"
                           for k, v in self.to_dict().items())
        atomic_write_bytes(path, ("{\n" + lines + "\n}\n").encode("utf-8"))
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> "Explanation":
        path = Path(path)
        data = read_json_object(path, "explain file")
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as err:
            raise CorruptedFileError(f"{path.name} in {str(path.parent)!r} is not a valid explain file: {err}") from None
