"""The work behind a saga's steps, registered by the modules that do it.

A task module declares what a step does with a decorator; the orchestrator finds it by the
step a command names. Registering the work (not only naming a task) is also what lets the
orchestrator run the *next* step at once in the same process, when it is registered there.

    STEPS = StepRegistry()

    @STEPS.action("charge_payment", transient=(ProviderUnavailable,))
    def charge(state: SagaState) -> StepResult: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue

from saga.state import SagaState


@dataclass
class StepResult:
    """What a step's work produced: data for the saga, and writes that must commit with the
    transition (each a ``TransactItems`` entry and the error to raise if its condition
    fails)."""

    data: dict[str, JsonValue] = field(default_factory=dict)
    writes: list[tuple[dict[str, Any], Callable[[], Exception] | None]] = field(
        default_factory=list
    )


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
