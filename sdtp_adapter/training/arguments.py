"""``TrainingArguments``: how to run the three training phases (every field is also an ``sdtp train`` flag)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..schedule import is_int, is_number

PHASES = ("mark", "warm", "joint")  # token marking, warm start, joint training; in this order
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class TrainingArguments:
    """How to train the pruning modules (the base model stays frozen).

    The joint phase's global batch is ``per_device_batch_size * gradient_accumulation_steps * processes``
    samples per optimisation step; its result does not depend on how that product is split.
    """

    output_dir: str = field(metadata={"help": "Folder for the final adapter, checkpoint-<step>/ folders, loss curves and trainer_state.json."})
    phases: tuple[str, ...] = field(
        default=PHASES,
        metadata={"help": f"Which phases to run, in order, from {list(PHASES)}. 'warm' without 'mark' reads the marking "
                  "saved by an earlier 'mark'-only run (marking_dir)."},
    )
    steps: int = field(default=300, metadata={"help": "Optimisation steps of the joint phase."})
    per_device_batch_size: int = field(default=1, metadata={"help": "Samples per micro-batch on each process (left-padded)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches accumulated per optimisation step."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Joint-phase AdamW learning rate (cosine decay to 10%)."})
    warmup_steps: int = field(default=5, metadata={"help": "Joint-phase linear warm-up steps."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (joint phase)."})
    mixed_precision: str = field(default="no", metadata={"help": f"accelerate mixed precision, one of {list(MIXED_PRECISION)}."})
    warm_start_epochs: int = field(default=6, metadata={"help": "Epochs of the warm start over the marked samples."})
    warm_start_learning_rate: float = field(default=2e-3, metadata={"help": "Warm-start AdamW learning rate."})
    marking_dir: str | None = field(
        default=None, metadata={"help": "Where a 'mark'-only run saves the marked samples and 'warm' reads them (default: output_dir/marking)."}
    )
    save_every: int = field(default=100, metadata={"help": "Checkpoint period in joint steps (0: only the final adapter)."})
    save_total_limit: int | None = field(default=None, metadata={"help": "Keep only the newest N checkpoints (None: all)."})
    seed: int = field(default=0, metadata={"help": "Seed of the data order, the Gumbel noise and the warm start."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Train into a non-empty output_dir (its earlier checkpoints are removed)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint-<step> folder, or 'latest' (the newest in output_dir), to continue the joint phase from."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.phases, str):
            self.phases = tuple(p.strip() for p in self.phases.split(",") if p.strip())
        self.phases = tuple(self.phases)
        if not self.phases or any(p not in PHASES for p in self.phases) or list(self.phases) != sorted(set(self.phases), key=PHASES.index):
            self._bad("phases", f"expected a non-empty subset of {list(PHASES)} in that order, without repeats")
        if not isinstance(self.output_dir, str) or not self.output_dir:
            self._bad("output_dir", "expected a folder path")
        for name, low in (("steps", 1), ("per_device_batch_size", 1), ("gradient_accumulation_steps", 1),
                          ("warmup_steps", 0), ("warm_start_epochs", 1), ("save_every", 0), ("seed", 0)):
            value = getattr(self, name)
            if not is_int(value) or value < low:
                self._bad(name, f"expected an integer >= {low}")
        if self.save_total_limit is not None and (not is_int(self.save_total_limit) or self.save_total_limit < 1):
            self._bad("save_total_limit", "expected an integer >= 1 or None")
        for name in ("learning_rate", "warm_start_learning_rate", "max_grad_norm"):
            value = getattr(self, name)
            if not is_number(value) or not value > 0:
                self._bad(name, "expected a finite number > 0")
        if self.mixed_precision not in MIXED_PRECISION:
            self._bad("mixed_precision", f"allowed: {list(MIXED_PRECISION)}")
        for name in ("overwrite_output_dir",):
            if not isinstance(getattr(self, name), bool):
                self._bad(name, "expected True or False")
        for name in ("resume_from_checkpoint", "marking_dir"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                self._bad(name, "expected a path or None")
        if self.resume_from_checkpoint is not None and "joint" not in self.phases:
            self._bad("resume_from_checkpoint", "checkpoints are taken in the joint phase: include 'joint' in phases")

    def _bad(self, name: str, allowed: str) -> None:
        raise ValueError(f"TrainingArguments.{name}={getattr(self, name)!r} is invalid: {allowed}")

    @property
    def global_batch_size_per_process(self) -> int:
        """Samples one process consumes per optimisation step."""
        return self.per_device_batch_size * self.gradient_accumulation_steps

    def to_dict(self) -> dict:
        data = asdict(self)
        data["phases"] = list(self.phases)
        return data
