"""What a saga does next: pure functions from (state, what happened) to (new state, commands).

No I/O here, so every rule is unit-tested directly. The orchestrator persists a transition and
its commands in one transaction (``saga.orchestrator``).

The rules:

* a step that succeeds moves the saga to the next step, or completes it;
* a business failure (``StepFailed``) compensates the completed compensatable steps, newest
  first; a step that failed *uncertainly* (it kept erroring or timed out, so its effect may
  have happened) is compensated too, which is why compensations must be idempotent and safe
  when there is nothing to undo;
* a transient error retries the step after an exponential backoff with jitter, up to
  ``RetryPolicy.attempts``; then an action counts as failed (uncertain), a retriable step or a
  compensation quarantines the saga for an operator;
* while its compensatable steps run, a saga may expire (``expires_at``): it is then undone;
* a quarantined saga resumes where it stopped when a late result arrives or an operator
  resumes it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue

from outbox.records import MAX_DELAY_SECONDS
from saga.definition import SagaDefinition, StepKind, TaskRef
from saga.state import QUARANTINE_DEADLINE, SagaState, SagaStatus


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a step is retried."""

    attempts: int = 5
    backoff_seconds: float = 1.0
    cap_seconds: float = 60.0  # SQS delays a message at most 900 s

    def delay(self, failed_attempts: int, rng: Callable[[], float] = random.random) -> int:
        """Seconds before the next attempt: exponential, capped, with "equal jitter" (half
        fixed, half random) so retries of many sagas that failed together spread out."""
        ceiling = min(self.cap_seconds, self.backoff_seconds * 2 ** (failed_attempts - 1))
        return math.ceil(ceiling / 2 + rng() * ceiling / 2)


@dataclass(frozen=True)
class Emit:
    """A command to send with the transition: run (or compensate) ``step`` via ``target``."""

    target: TaskRef
    step: str
    compensate: bool
    attempt: int
    delay_seconds: int = 0


@dataclass
class Transition:
    state: SagaState
    emits: list[Emit] = field(default_factory=list)
    outcome: str = ""  # what happened, for logs and the caller


class Planner:
    """The transition rules of one saga definition."""

    def __init__(
        self,
        definition: SagaDefinition,
        policy: RetryPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.definition = definition
        self.policy = policy
        self.clock = clock

    # -- entry points ------------------------------------------------------------------------

    def start(
        self, saga_id: str, data: dict[str, JsonValue], *, expires_at: float | None = None
    ) -> Transition:
        """A new saga whose leading creator-done steps have happened; runs the first action."""
        state = SagaState(
            saga_id=saga_id,
            saga=self.definition.name,
            status=SagaStatus.RUNNING,
            step=self.definition.first_action,
            data=dict(data),
            expires_at=expires_at,
            version=0,
        )
        for step in self.definition.steps[: self.definition.first_action]:
            state.note(step.name, "succeeded", "done when the saga was created")
        transition = Transition(state, outcome="started")
        self._run(transition, self.definition.first_action, attempt=1)
        return transition

    def succeeded(self, state: SagaState, data: dict[str, Any] | None = None) -> Transition:
        """The current command's work is done."""
        transition = self._next(state)
        new = transition.state
        self._unquarantine(new)
        new.data.update(data or {})
        step = self.definition.steps[new.step]
        if new.compensating:
            new.note(step.name, "compensated")
            below = self.definition.last_compensatable(below=new.step)
            self._compensate_or_finish(transition, below)
        else:
            new.note(step.name, "succeeded")
            if new.step + 1 < len(self.definition.steps):
                self._run(transition, new.step + 1, attempt=1)
                transition.outcome = "advanced"
            else:
                self._finish(transition, SagaStatus.COMPLETED)
        return transition

    def failed(self, state: SagaState, reason: str, *, certain: bool) -> Transition:
        """The current action failed: undo what was done. ``certain``: it had no effect."""
        transition = self._next(state)
        new = transition.state
        self._unquarantine(new)
        step = self.definition.steps[new.step]
        if new.compensating or step.kind is StepKind.RETRIABLE:
            return self._quarantine(transition, reason)
        new.note(step.name, "failed", reason)
        new.reason = reason
        first = new.step if not certain and step.kind is StepKind.COMPENSATABLE else None
        below = self.definition.last_compensatable(below=new.step)
        self._compensate_or_finish(transition, first if first is not None else below)
        return transition

    def transient(self, state: SagaState, error: str, *, at_least: float = 0) -> Transition:
        """The current command failed in a way worth retrying (not before ``at_least`` s)."""
        transition = self._next(state)
        new = transition.state
        self._unquarantine(new)
        step = self.definition.steps[new.step]
        if new.attempt < self.policy.attempts:
            new.note(step.name, "retrying", error)
            delay = max(self.policy.delay(new.attempt), min(math.ceil(at_least), MAX_DELAY_SECONDS))
            if new.compensating:
                self._compensate(transition, new.step, new.attempt + 1, delay)
            else:
                self._run(transition, new.step, new.attempt + 1, delay)
            transition.outcome = "retrying"
            return transition
        detail = f"{step.name} failed {new.attempt} times; last: {error}"
        if new.compensating or step.kind is StepKind.RETRIABLE:
            return self._quarantine(transition, detail)
        return self.failed(state, detail, certain=False)

    def timed_out(self, state: SagaState) -> Transition:
        """The sweeper found the saga past its deadline: expired, or a command went missing."""
        now = self.clock()
        if (
            state.status is SagaStatus.RUNNING
            and state.expires_at is not None
            and now >= state.expires_at
            and self.definition.expirable(state.step)
        ):
            return self.failed(state, "expired before it could complete", certain=False)
        return self.transient(state, "timed out: no result before the deadline")

    def resume(self, state: SagaState) -> Transition:
        """An operator's restart of a quarantined saga: the current command, attempts reset."""
        transition = self._next(state)
        new = transition.state
        self._unquarantine(new)
        new.note(self.definition.steps[new.step].name, "resumed", "by an operator", attempt=0)
        if new.compensating:
            self._compensate(transition, new.step, 1, 0)
        else:
            self._run(transition, new.step, 1, 0)
        transition.outcome = "resumed"
        return transition

    # -- helpers -----------------------------------------------------------------------------

    def _next(self, state: SagaState) -> Transition:
        new = state.model_copy(deep=True)
        new.version = state.version + 1
        return Transition(new)

    @staticmethod
    def _unquarantine(state: SagaState) -> None:
        if state.status is SagaStatus.QUARANTINED and state.quarantined_from is not None:
            state.status, state.quarantined_from = state.quarantined_from, None

    def _run(self, transition: Transition, index: int, attempt: int, delay: int = 0) -> None:
        state, step = transition.state, self.definition.steps[index]
        assert step.action is not None  # the definition allows None only before first_action
        state.status, state.step, state.attempt = SagaStatus.RUNNING, index, attempt
        deadline = self.clock() + delay + step.timeout_seconds
        if state.expires_at is not None and self.definition.expirable(index):
            deadline = min(deadline, state.expires_at)
        state.deadline = deadline
        transition.emits.append(Emit(step.action, step.name, False, attempt, delay))

    def _compensate(self, transition: Transition, index: int, attempt: int, delay: int) -> None:
        state, step = transition.state, self.definition.steps[index]
        assert step.compensation is not None  # compensatable steps always have one
        state.status, state.step, state.attempt = SagaStatus.COMPENSATING, index, attempt
        state.deadline = self.clock() + delay + step.timeout_seconds
        transition.emits.append(Emit(step.compensation, step.name, True, attempt, delay))

    def _compensate_or_finish(self, transition: Transition, index: int | None) -> None:
        if index is None:
            self._finish(transition, SagaStatus.COMPENSATED)
        else:
            self._compensate(transition, index, 1, 0)
            transition.outcome = "compensating"

    def _finish(self, transition: Transition, status: SagaStatus) -> None:
        state = transition.state
        state.status, state.deadline, state.attempt = status, None, 1
        transition.outcome = status.value
        if status is SagaStatus.COMPENSATED and self.definition.on_compensated is not None:
            step = self.definition.steps[state.step]
            transition.emits.append(Emit(self.definition.on_compensated, step.name, True, 1))

    def _quarantine(self, transition: Transition, reason: str) -> Transition:
        state = transition.state
        state.note(self.definition.steps[state.step].name, "quarantined", reason)
        state.quarantined_from, state.status = state.status, SagaStatus.QUARANTINED
        state.reason, state.deadline = reason, QUARANTINE_DEADLINE
        transition.outcome = "quarantined"
        return transition
