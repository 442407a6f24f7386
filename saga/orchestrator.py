"""The orchestrator: runs a step's work and commits what follows, atomically.

A step's Celery task calls ``Orchestrator.handle`` with the command it received. The
orchestrator reads the saga, ignores a command that is no longer current (a redelivery, or a
retry the sweeper already replaced), runs the step's registered work (``saga.steps``), and
commits in one ``TransactWriteItems``: the new saga state (conditional on the version read),
the step's own writes (a ticket, a released seat), the records of its outside effects (an
e-mail's delivery record, below) and the outbox records of the next commands.
So a transition and the command it implies are never separated by a crash, and a crash
anywhere before the commit only means the command is received again and the (idempotent) work
redone.

**Steps run at once when they can.** When a step succeeds and the next one's work is
registered in this process, it runs right away, and the two transitions commit as one (then
the next, and so on). The first step that fails, or is not registered here, is left to its
command as usual: it runs from its queue with its own retries. A purchase's charge, ticket and
confirmation thus usually cost one transaction instead of three, with the same guarantees:
every step is idempotent and nothing is committed before all of them did their work.

**Records of outside effects commit with the transition, and stand without it.** A step whose
effect lies outside DynamoDB and takes no idempotency key (an e-mail) returns the entry that
records it in ``StepResult.effect_records``: it is carried through run-ahead like the steps'
writes and commits in the same ``TransactWriteItems``, which saves it a write of its own. If
that commit fails for any reason (a lost race, a DynamoDB error, a record's own condition),
each record is then written on its own, best effort, before the error goes on: the effect
happened whether or not the transition did, and a retry that found it unrecorded would repeat
it. A record whose condition fails (in the transaction or alone) means what it guards moved on
— say a notification claim another worker took over — and the transaction raises the record's
own error, so the command is received again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from flashsale.drills import CrashDrill
from flashsale.dynamo import write_alone
from outbox import OutboxRecord, TransactionConflict, UnitOfWork
from saga.definition import SagaDefinition
from saga.exceptions import ConcurrentTransition, RetryAfter, SagaNotFound, StepFailed
from saga.state import SagaState, SagaStatus
from saga.steps import StepHandler, StepRegistry, StepResult, Write
from saga.store import SagaStore
from saga.transitions import Emit, Planner, RetryPolicy, Transition

log = structlog.get_logger("saga")

_COMMAND_NAMESPACE = uuid.UUID("0c7f3f2e-54a1-4f55-8a0e-7d9d3b1c6e21")
MAX_CONFLICTS = 10  # re-reads of one command before giving up to the queue's redelivery


class Command(BaseModel):
    """The payload of a step's outbox record: which saga, which step, which way."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    saga_id: str
    saga: str
    step: str
    compensate: bool = False
    attempt: int = Field(default=1, ge=1)


@dataclass(frozen=True)
class Staged:
    """What the steps' work gives a transition to commit, besides the saga's state and its
    next commands."""

    writes: tuple[Write, ...] = ()
    effect_records: tuple[Write, ...] = ()

    def plus(self, result: StepResult) -> Staged:
        return Staged(
            (*self.writes, *result.writes), (*self.effect_records, *result.effect_records)
        )


class Orchestrator:
    """Moves the sagas of one definition; shared by workers, the sweeper and operators."""

    def __init__(
        self,
        definition: SagaDefinition,
        store: SagaStore,
        *,
        outbox_table: str,
        outbox_shards: int,
        policy: RetryPolicy,
        steps: StepRegistry | None = None,
        clock: Callable[[], float] = time.time,
        drill: CrashDrill | None = None,
    ) -> None:
        self.definition = definition
        self.steps = steps or StepRegistry()
        # Crash points: ``after_work`` (the step's effect happened, the transition is not
        # committed) and ``after_commit`` (committed, the message not yet acknowledged).
        self.drill = drill or CrashDrill()
        self.store = store
        self.outbox_table = outbox_table
        self.outbox_shards = outbox_shards
        self.planner = Planner(definition, policy, clock)

    # -- starting ----------------------------------------------------------------------------

    def start_items(
        self, saga_id: str, data: dict[str, JsonValue], *, expires_at: float | None = None
    ) -> list[dict[str, Any]]:
        """``TransactItems`` entries that create the saga and send its first command, for the
        creator to commit with its own writes (the seat hold and the order, say)."""
        transition = self.planner.start(saga_id, data, expires_at=expires_at)
        uow = self._unit_of_work(transition, expected_version=None)
        return uow.items

    # -- commands ----------------------------------------------------------------------------

    def handle(self, event: dict[str, Any]) -> str:
        """Run the step a relayed command names, then commit the saga's next move.

        The step's ``transient`` errors are retried by the saga (backoff, then failure or
        quarantine); a retriable step's transient error is re-raised instead, so the queue
        redelivers it and finally dead-letters it. Any other exception propagates (the message
        is redelivered). Returns what happened: ``stale``, ``advanced``, ``completed``, ...
        """
        command = Command.model_validate(event["payload"])
        if command.saga != self.definition.name:
            raise ValueError(f"command of saga {command.saga} sent to {self.definition.name}")
        handler = self.steps.handler(command.step, command.compensate)
        if handler is None:
            raise LookupError(f"no work registered here for {command.saga}.{command.step}")
        for _ in range(MAX_CONFLICTS):
            state = self._load(command.saga_id)
            if not self._current(state, command):
                log.info("saga.stale_command", saga_id=state.saga_id, **_fields(command))
                return "stale"
            transition, staged = self._react(state, command, handler)
            transition, staged = self._run_ahead(transition, staged)
            self.drill.maybe_crash("after_work", saga_id=state.saga_id, step=command.step)
            try:
                self._commit(transition, staged, expected_version=state.version)
            except ConcurrentTransition:
                continue
            self.drill.maybe_crash("after_commit", saga_id=state.saga_id, step=command.step)
            return transition.outcome
        raise ConcurrentTransition(f"saga {command.saga_id}: {MAX_CONFLICTS} conflicts in a row")

    def on_deadline(self, saga_id: str) -> str:
        """The sweeper's move for a saga past its deadline (a no-op if it is no longer due)."""
        for _ in range(MAX_CONFLICTS):
            state = self._load(saga_id)
            if state.status.final or state.deadline is None:
                return "final"
            if state.deadline > self.planner.clock():
                return "not_due"
            transition = self.planner.timed_out(state)
            try:
                self._commit(transition, Staged(), expected_version=state.version)
            except ConcurrentTransition:
                continue
            return transition.outcome
        raise ConcurrentTransition(f"saga {saga_id}: {MAX_CONFLICTS} conflicts in a row")

    def resume(self, saga_id: str) -> str:
        """An operator restarts a quarantined saga's current command."""
        state = self._load(saga_id)
        if state.quarantined_from is None:
            return f"not quarantined ({state.status.value})"
        transition = self.planner.resume(state)
        self._commit(transition, Staged(), expected_version=state.version)
        return transition.outcome

    # -- internals ---------------------------------------------------------------------------

    def _load(self, saga_id: str) -> SagaState:
        state = self.store.get(saga_id)
        if state is None:
            raise SagaNotFound(saga_id)
        return state

    def _current(self, state: SagaState, command: Command) -> bool:
        """Whether ``command`` is what the saga waits for: same step, same direction."""
        if state.status.final:
            return False
        step = self.definition.steps[state.step].name
        return step == command.step and state.compensating == command.compensate

    def _react(
        self, state: SagaState, command: Command, handler: StepHandler
    ) -> tuple[Transition, Staged]:
        step = self.definition.steps[state.step]
        transient = handler.transient
        try:
            result = handler.work(state)
        except StepFailed as exc:
            log.info(
                "saga.step_failed", saga_id=state.saga_id, reason=exc.reason, **_fields(command)
            )
            return self.planner.failed(state, exc.reason, certain=exc.certain), Staged()
        except RetryAfter as exc:
            log.info(
                "saga.step_waits", saga_id=state.saga_id, seconds=exc.seconds, reason=exc.reason,
                **_fields(command),
            )  # fmt: skip
            return self.planner.transient(state, exc.reason, at_least=exc.seconds), Staged()
        except transient as exc:
            if not command.compensate and not self.definition.before_point_of_no_return(state.step):
                raise  # a retriable step: the queue redelivers, then dead-letters
            log.warning(
                "saga.step_error", saga_id=state.saga_id, error=repr(exc), **_fields(command)
            )
            return self.planner.transient(state, f"{type(exc).__name__}: {exc}"), Staged()
        log.info(
            "saga.step_done", saga_id=state.saga_id, step_kind=step.kind.value, **_fields(command)
        )
        return self.planner.succeeded(state, result.data), Staged().plus(result)

    def _run_ahead(self, transition: Transition, staged: Staged) -> tuple[Transition, Staged]:
        """Run the next steps here while they are registered and succeed (see the module)."""
        while (
            len(transition.emits) == 1
            and not (emit := transition.emits[0]).compensate
            and emit.delay_seconds == 0
            and transition.state.status is SagaStatus.RUNNING
            and (handler := self.steps.handler(emit.step, False)) is not None
        ):
            state = transition.state
            try:
                result = handler.work(state)
            except Exception as exc:  # its own command runs it, with its own rules
                log.info("saga.run_ahead_stopped", saga_id=state.saga_id, step=emit.step,
                         error=repr(exc))  # fmt: skip
                break
            log.info("saga.step_done", saga_id=state.saga_id, step=emit.step, run_ahead=True)
            transition = self.planner.succeeded(state, result.data)
            staged = staged.plus(result)
        return transition, staged

    def _unit_of_work(self, transition: Transition, *, expected_version: int | None) -> UnitOfWork:
        state = transition.state
        uow = UnitOfWork(outbox_table=self.outbox_table, shards=self.outbox_shards)
        first_sequence = state.events + 1
        state.events += len(transition.emits)

        def moved_on() -> Exception:
            return ConcurrentTransition(
                f"saga {state.saga_id} moved past version {expected_version}"
            )

        # The saga's own write goes first, so a lost race is reported as such.
        uow.add(self.store.put_entry(state, expected_version=expected_version), moved_on)
        for offset, emit in enumerate(transition.emits):
            uow.add_event(self._record(state, emit, first_sequence + offset))
        return uow

    def _commit(self, transition: Transition, staged: Staged, *, expected_version: int) -> None:
        try:
            uow = self._unit_of_work(transition, expected_version=expected_version)
            for entry, on_failure in (*staged.writes, *staged.effect_records):
                uow.add(entry, on_failure)
            uow.commit(self.store.dynamodb)
        except Exception as exc:
            self._record_alone(transition.state.saga_id, staged.effect_records)
            if isinstance(exc, TransactionConflict):
                raise ConcurrentTransition(str(exc)) from exc
            raise
        state = transition.state
        log.info(
            "saga.transition",
            saga_id=state.saga_id,
            outcome=transition.outcome,
            status=state.status.value,
            step=self.definition.steps[state.step].name,
            version=state.version,
        )

    def _record_alone(self, saga_id: str, records: Sequence[Write]) -> None:
        """Write each effect record on its own after its transition failed to commit (see the
        module). Best effort: one that cannot be written is left to its owner's own recovery
        (for a notification claim, the lease running out), as after a crash."""
        for entry, _ in records:
            try:
                written = write_alone(self.store.dynamodb, entry)
            except Exception as exc:
                log.warning("saga.effect_record_failed", saga_id=saga_id, error=repr(exc))
                continue
            if written:
                log.info("saga.effect_recorded_alone", saga_id=saga_id)
            else:  # what it guards moved on: a claim taken over by another worker, say
                log.warning("saga.effect_record_refused", saga_id=saga_id)

    def _record(self, state: SagaState, emit: Emit, sequence: int) -> OutboxRecord:
        command = Command(
            saga_id=state.saga_id,
            saga=state.saga,
            step=emit.step,
            compensate=emit.compensate,
            attempt=emit.attempt,
        )
        return OutboxRecord(
            event_id=str(uuid.uuid5(_COMMAND_NAMESPACE, f"{state.saga_id}:{sequence}")),
            aggregate_id=state.saga_id,
            sequence=sequence,
            type=f"{state.saga}.{emit.step}.{'compensate' if emit.compensate else 'run'}",
            destination=emit.target.queue,
            task=emit.target.task,
            payload=command.model_dump(mode="json"),
            delay_seconds=emit.delay_seconds,
        )


def _fields(command: Command) -> dict[str, Any]:
    return {"step": command.step, "compensate": command.compensate, "attempt": command.attempt}
