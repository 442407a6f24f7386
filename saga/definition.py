"""A saga is data: an ordered list of steps, each an action, a compensation and a kind.

The kinds follow the classic saga rules (Garcia-Molina & Salem; Richardson's *Microservices
Patterns*):

* **compensatable** steps come first: each can be undone by its compensation;
* the **pivot** is the point of no return: once it succeeds the saga will complete;
* **retriable** steps come after the pivot: they are retried until they succeed and never
  trigger compensation.

``SagaDefinition`` checks this order when it is built, so a definition that could leave a
saga half undone cannot be declared.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from flashsale.names import QueueRole
from saga.exceptions import InvalidDefinition


class StepKind(StrEnum):
    COMPENSATABLE = "compensatable"
    PIVOT = "pivot"
    RETRIABLE = "retriable"


_ORDER = {StepKind.COMPENSATABLE: 0, StepKind.PIVOT: 1, StepKind.RETRIABLE: 2}


@dataclass(frozen=True)
class TaskRef:
    """A Celery task and the queue its messages go to."""

    task: str
    queue: QueueRole


@dataclass(frozen=True)
class Step:
    """One step. ``action`` is None for a step its creator performs in the saga's first
    transaction (the purchase saga's seat hold is written with the order itself)."""

    name: str
    kind: StepKind
    action: TaskRef | None
    compensation: TaskRef | None = None
    timeout_seconds: float = 60.0


@dataclass(frozen=True)
class SagaDefinition:
    """A named, validated list of steps, plus the task told when a saga has been undone."""

    name: str
    steps: tuple[Step, ...]
    on_compensated: TaskRef | None = None

    def __post_init__(self) -> None:
        if not self.steps:
            raise InvalidDefinition(f"saga {self.name} has no steps")
        names = [step.name for step in self.steps]
        if len(set(names)) != len(names):
            raise InvalidDefinition(f"saga {self.name} repeats a step name: {names}")
        kinds = [_ORDER[step.kind] for step in self.steps]
        if kinds != sorted(kinds):
            raise InvalidDefinition(
                f"saga {self.name}: steps must be compensatable, then at most one pivot, then "
                f"retriable; got {[step.kind.value for step in self.steps]}"
            )
        if kinds.count(_ORDER[StepKind.PIVOT]) > 1:
            raise InvalidDefinition(f"saga {self.name} has more than one pivot")
        for step in self.steps:
            if step.kind is StepKind.COMPENSATABLE and step.compensation is None:
                raise InvalidDefinition(f"compensatable step {step.name} has no compensation")
            if step.kind is not StepKind.COMPENSATABLE and step.compensation is not None:
                raise InvalidDefinition(
                    f"{step.kind.value} step {step.name} cannot have a compensation"
                )
            if step.timeout_seconds <= 0:
                raise InvalidDefinition(f"step {step.name} needs a positive timeout")
        first_action = next((i for i, s in enumerate(self.steps) if s.action is not None), None)
        if first_action is None or any(s.action is None for s in self.steps[first_action:]):
            raise InvalidDefinition(
                f"saga {self.name}: only leading steps may be done by the saga's creator"
            )

    def index(self, step_name: str) -> int:
        for i, step in enumerate(self.steps):
            if step.name == step_name:
                return i
        raise KeyError(f"saga {self.name} has no step {step_name}")

    @property
    def first_action(self) -> int:
        """Index of the first step run by a task (the steps before are done at creation)."""
        return next(i for i, s in enumerate(self.steps) if s.action is not None)

    def before_point_of_no_return(self, index: int) -> bool:
        """Whether a failure of step ``index`` still undoes the saga (it is not retriable)."""
        return self.steps[index].kind is not StepKind.RETRIABLE

    def expirable(self, index: int) -> bool:
        """Whether a saga at step ``index`` can still expire: only while compensatable steps
        run. Once the pivot is reached the buyer has done their part (paid, in the purchase
        saga), and a slow pivot must not undo it."""
        return self.steps[index].kind is StepKind.COMPENSATABLE

    def last_compensatable(self, below: int) -> int | None:
        """The highest compensatable step with index < ``below``, or None."""
        for i in range(min(below, len(self.steps)) - 1, -1, -1):
            if self.steps[i].kind is StepKind.COMPENSATABLE:
                return i
        return None
