"""The interface every synthetic task implements; tasks know nothing of models or the harness.

A task is a frozen dataclass whose fields are its user-facing parameters. Each field's ``metadata`` carries a ``help``
string and optional numeric bounds (``ge``, ``gt``, ``le``, ``lt``) that the harness turns into validated config keys
(``task.<field>``), so adding a task needs no harness code beyond one registry line.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:  # the methods import torch themselves: the command line lists tasks without importing it
    import torch


def param(default, help: str, **bounds) -> dataclasses.Field:
    """A task parameter: its default, a one-line help text and optional bounds (ge, gt, le, lt)."""
    unknown = set(bounds) - {"ge", "gt", "le", "lt"}
    if unknown:
        raise TypeError(f"unknown bound(s) {sorted(unknown)}; allowed: ge, gt, le, lt")
    return dataclasses.field(default=default, metadata={"help": help, **bounds})


@dataclasses.dataclass(frozen=True)
class Task:
    """Base class. Subclasses set the class variables and implement the methods below."""

    name: ClassVar[str]
    #: "tokens": x is a LongTensor (B, L) of ids < input_size; "features": x is a float tensor (B, L, input_size).
    input_kind: ClassVar[Literal["tokens", "features"]]
    #: what the task's loss and accuracy are, in a few words: recorded with every run (summary.json), where reports
    #: read them for axis labels and table notes
    loss_label: ClassVar[str] = "eval loss"
    accuracy_label: ClassVar[str] = "eval accuracy"
    #: where or how the accuracy is scored, for a table's note (e.g. "on the recall window"); None: nothing to add
    accuracy_note: ClassVar[str | None] = None

    if TYPE_CHECKING:
        #: the task's length parameter (each task says what it measures: a copy task's delay, the adding problem's
        #: sequence length): what `eval.lengths` varies for length generalisation and what reports group and plot
        #: by. Every task declares it as a `param`, with its default and help, where its fields read best (a field
        #: here would come first in every task); `__init_subclass__` refuses a task without it.
        length: int

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if not any("length" in vars(k).get("__annotations__", {}) for k in cls.__mro__ if k is not Task):
            raise TypeError(f"task {cls.__name__} declares no `length` parameter (every task has one: what "
                            "length generalisation varies)")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            for bound, ok, word in (("ge", operator.ge, ">="), ("gt", operator.gt, ">"),
                                    ("le", operator.le, "<="), ("lt", operator.lt, "<")):
                if bound in meta and not ok(value, meta[bound]):
                    raise ValueError(f"task.{f.name} must be {word} {meta[bound]} (got {value!r})")

    # --- shapes -------------------------------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        """Vocabulary size (tokens) or number of input features per step (features)."""
        raise NotImplementedError

    @property
    def output_size(self) -> int:
        """Number of classes, or 1 for a regression output."""
        raise NotImplementedError

    @property
    def seq_len(self) -> int:
        """Input length L of every sequence (the tokens a model processes per sequence)."""
        raise NotImplementedError

    # --- data ---------------------------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu"):
        """Draw ``n`` fresh sequences on ``device`` from ``generator`` (which must live on that device).

        Returns ``(x, y)``; shapes are task-specific and documented by each task.
        """
        raise NotImplementedError

    # --- objective and metrics ------------------------------------------------------------------------------------
    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scalar training loss from the model output at every position, ``out`` (B, L, output_size)."""
        raise NotImplementedError

    def eval_stats(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sequence statistics, each a float tensor (B,): at least ``loss`` and ``accuracy``.

        The mean over sequences of ``loss`` equals :meth:`loss` on the same batch, so evaluation in chunks is exact.
        """
        raise NotImplementedError

    @property
    def baseline_loss(self) -> float:
        """The loss of the best memoryless (copy) or constant (adding) predictor, from the literature."""
        raise NotImplementedError

    @property
    def chance_accuracy(self) -> float | None:
        """The accuracy of guessing, recorded with every run (the report draws it): None where the task has no chance
        level (adding: a regression, whose accuracy is a tolerance band)."""
        return None

    @property
    def no_binding_accuracy(self) -> float | None:
        """For recall tasks: the accuracy of a model that finds the candidate answers in the sequence but does not bind
        each to its cue (MQAR: 1/D); recorded with every run and drawn by reports. None where the task has no such
        level."""
        return None

    @property
    def no_binding_loss(self) -> float | None:
        """The loss at that level (MQAR: ln D); None where the task has none."""
        return None

    @property
    def solved_criterion(self) -> str:
        """Human-readable form of :meth:`solved`, e.g. ``"eval_accuracy >= 0.99"``."""
        raise NotImplementedError

    def solved(self, stats: dict[str, float]) -> bool:
        """Whether evaluation results ``{"eval_loss": ..., "eval_accuracy": ...}`` meet the solved criterion."""
        raise NotImplementedError

    @classmethod
    def params(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))


class SolvedByAccuracy:
    """For tasks with a ``solved_accuracy`` field: solved once the eval accuracy reaches it."""

    solved_accuracy: float

    @property
    def solved_criterion(self) -> str:
        return f"eval_accuracy >= {self.solved_accuracy:g}"

    def solved(self, stats: dict[str, float]) -> bool:
        return stats["eval_accuracy"] >= self.solved_accuracy
