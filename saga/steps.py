"""The work behind a saga's steps, registered by the modules that do it.

A task module declares what a step does with a decorator; the orchestrator finds it by the
step a command names. Registering the work (not only naming a task) is also what lets the
orchestrator run the *next* step at once in the same process, when it is registered there.

    STEPS = StepRegistry()

    @STEPS.action("charge_payment", transient=(ProviderUnavailable,))
    def charge(state: SagaState) -> StepResult: ...

A step's result carries what must commit with its transition: ``writes`` (the step's own
changes, a ticket say, which stand or fall with the transition) and ``effect_records`` (the
bookkeeping of an effect outside DynamoDB that already happened, an e-mail sent, which must be
written even if the transition is not: see ``saga.orchestrator``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue

from saga.state import SagaState

# A ``TransactItems`` entry and the error to raise if its condition fails in the transaction.
Write = tuple[dict[str, Any], Callable[[], Exception] | None]


@dataclass
class StepResult:
    """What a step's work produced: data for the saga; ``writes`` that commit with the
    transition or not at all; and ``effect_records``, entries recording an outside effect that
    happened (a message sent), committed with the transition to save a write of their own, but
    written on their own if it fails: the effect stands whatever becomes of the transition, and
    an unrecorded one would be repeated."""

    data: dict[str, JsonValue] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    effect_records: list[Write] = field(default_factory=list)


StepWork = Callable[[SagaState], StepResult]


@dataclass(frozen=True)
class StepHandler:
    """A step's work and the errors worth retrying (the rest fail the step or the task)."""

    work: StepWork
    transient: tuple[type[BaseException], ...] = ()


class StepRegistry:
    """Actions and compensations by step name."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[str, bool], StepHandler] = {}

    def action(
        self, step: str, *, transient: tuple[type[BaseException], ...] = ()
    ) -> Callable[[StepWork], StepWork]:
        return self._register(step, False, transient)

    def compensation(
        self, step: str, *, transient: tuple[type[BaseException], ...] = ()
    ) -> Callable[[StepWork], StepWork]:
        return self._register(step, True, transient)

    def handler(self, step: str, compensate: bool) -> StepHandler | None:
        return self._handlers.get((step, compensate))

    def _register(
        self, step: str, compensate: bool, transient: tuple[type[BaseException], ...]
    ) -> Callable[[StepWork], StepWork]:
        def register(work: StepWork) -> StepWork:
            if (step, compensate) in self._handlers:
                raise ValueError(
                    f"step {step} ({'compensation' if compensate else 'action'}) "
                    "is registered twice"
                )
            self._handlers[(step, compensate)] = StepHandler(work, transient)
            return work

        return register
