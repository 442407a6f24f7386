"""The saga's rules as pure functions: state and event in, state and commands out."""

from __future__ import annotations

import pytest

from saga import Planner, RetryPolicy, SagaState, SagaStatus
from saga.state import QUARANTINE_DEADLINE
from saga.transitions import Transition
from tasks.purchase_saga import purchase_definition

CHARGE, TICKET, NOTIFY = 1, 2, 3


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def planner(clock: Clock) -> Planner:
    return Planner(purchase_definition(30), RetryPolicy(attempts=3, backoff_seconds=2), clock)


def started(planner: Planner, expires_in: float = 600) -> SagaState:
    return planner.start("order-1", {"quantity": 2}, expires_at=planner.clock() + expires_in).state


def commands(transition: Transition) -> list[tuple[str, str, bool, int]]:
    return [(e.target.task, e.step, e.compensate, e.attempt) for e in transition.emits]


def test_start__runs_the_first_action_with_the_creators_steps_done(planner: Planner) -> None:
    transition = planner.start("order-1", {"quantity": 2}, expires_at=1_600)

    state = transition.state
    assert (state.status, state.step, state.version) == (SagaStatus.RUNNING, CHARGE, 0)
    assert commands(transition) == [("tasks.payment.charge", "charge_payment", False, 1)]
    assert [(h.step, h.event) for h in state.history] == [("reserve_seat", "succeeded")]
    assert state.deadline == 1_030  # the step's timeout, before the hold's expiry


def test_succeeded__walks_every_step_then_completes(planner: Planner) -> None:
    state = started(planner)
    tasks = []
    for _ in range(3):
        transition = planner.succeeded(state, {"x": state.step})
        tasks += commands(transition)
        state = transition.state

    assert state.status is SagaStatus.COMPLETED
    assert state.deadline is None and state.version == 3
    assert [t[0] for t in tasks] == ["tasks.tickets.issue", "tasks.notify.confirmation"]
    assert state.data == {"quantity": 2, "x": NOTIFY}


def test_failed__a_certain_failure_compensates_only_the_steps_before(planner: Planner) -> None:
    state = started(planner)

    transition = planner.failed(state, "declined", certain=True)

    assert transition.state.status is SagaStatus.COMPENSATING
    assert commands(transition) == [("tasks.tickets.release_seat", "reserve_seat", True, 1)]


def test_failed__an_uncertain_failure_compensates_the_step_itself_first(planner: Planner) -> None:
    state = started(planner)

    transition = planner.failed(state, "lost track", certain=False)

    assert commands(transition) == [("tasks.payment.refund", "charge_payment", True, 1)]


def test_compensations__run_newest_first_then_tell_the_buyer(planner: Planner) -> None:
    state = planner.succeeded(started(planner)).state  # charged; now at the ticket (pivot)
    transition = planner.failed(state, "ticketing refused", certain=True)
    emitted = commands(transition)
    while not transition.state.status.final:
        transition = planner.succeeded(transition.state)
        emitted += commands(transition)

    assert transition.state.status is SagaStatus.COMPENSATED
    assert [e[0] for e in emitted] == [
        "tasks.payment.refund", "tasks.tickets.release_seat", "tasks.notify.cancellation",
    ]  # fmt: skip


def test_transient__backs_off_then_fails_the_step_uncertainly(
    planner: Planner, clock: Clock
) -> None:
    state = started(planner)
    delays = []
    for _ in range(2):
        transition = planner.transient(state, "503")
        (emit,) = transition.emits
        delays.append(emit.delay_seconds)
        state = transition.state

    assert state.attempt == 3
    assert 1 <= delays[0] <= 2 and 2 <= delays[1] <= 4  # 2 s, then 4 s, with equal jitter
    last = planner.transient(state, "503")
    assert last.state.status is SagaStatus.COMPENSATING
    assert commands(last) == [("tasks.payment.refund", "charge_payment", True, 1)]


def test_transient__a_compensation_that_keeps_failing_quarantines(planner: Planner) -> None:
    state = planner.failed(started(planner), "declined", certain=True).state
    for _ in range(2):
        state = planner.transient(state, "DynamoDB down").state

    quarantined = planner.transient(state, "DynamoDB down")

    state = quarantined.state
    assert (state.status, state.quarantined_from) == (
        SagaStatus.QUARANTINED, SagaStatus.COMPENSATING,
    )  # fmt: skip
    assert state.deadline == QUARANTINE_DEADLINE and not quarantined.emits
    assert "failed 3 times" in state.reason


def test_resume__restarts_a_quarantined_compensation(planner: Planner) -> None:
    state = planner.failed(started(planner), "declined", certain=True).state
    for _ in range(3):
        state = planner.transient(state, "down").state

    resumed = planner.resume(state)

    assert resumed.state.status is SagaStatus.COMPENSATING
    assert commands(resumed) == [("tasks.tickets.release_seat", "reserve_seat", True, 1)]


def test_timed_out__an_expired_hold_undoes_the_saga(planner: Planner, clock: Clock) -> None:
    state = started(planner, expires_in=10)
    clock.now += 11

    transition = planner.timed_out(state)

    assert transition.state.status is SagaStatus.COMPENSATING
    assert commands(transition) == [("tasks.payment.refund", "charge_payment", True, 1)]


def test_timed_out__a_lost_command_is_sent_again(planner: Planner, clock: Clock) -> None:
    state = started(planner)
    clock.now += 31

    transition = planner.timed_out(state)

    assert commands(transition) == [("tasks.payment.charge", "charge_payment", False, 2)]


@pytest.mark.parametrize(("step", "task"), [(TICKET, "tasks.tickets.issue"),
                                            (NOTIFY, "tasks.notify.confirmation")])  # fmt: skip
def test_timed_out__the_hold_no_longer_applies_once_the_buyer_has_paid(
    planner: Planner, clock: Clock, step: int, task: str
) -> None:
    state = started(planner, expires_in=10)
    while state.step < step:
        state = planner.succeeded(state).state
    clock.now += 100

    transition = planner.timed_out(state)

    assert transition.state.status is SagaStatus.RUNNING
    assert [(e.target.task, e.attempt) for e in transition.emits] == [(task, 2)]


def test_retriable_step__quarantines_after_its_attempts_and_completes_on_a_late_success(
    planner: Planner, clock: Clock
) -> None:
    state = planner.succeeded(planner.succeeded(started(planner)).state).state
    for _ in range(3):
        clock.now += 31
        state = planner.timed_out(state).state
    assert state.status is SagaStatus.QUARANTINED

    done = planner.succeeded(state)

    assert done.state.status is SagaStatus.COMPLETED and done.state.quarantined_from is None


def test_retry_policy__is_capped() -> None:
    policy = RetryPolicy(attempts=20, backoff_seconds=1, cap_seconds=60)

    assert policy.delay(30, rng=lambda: 1.0) == 60
    assert policy.delay(1, rng=lambda: 0.0) == 1


def test_transient__waits_at_least_what_the_step_asked_for(planner: Planner) -> None:
    state = started(planner)

    transition = planner.transient(state, "held elsewhere", at_least=60.2)

    (emit,) = transition.emits
    assert emit.delay_seconds == 61 and transition.outcome == "retrying"
    assert transition.state.deadline == 1_000 + 61 + 30  # the wait, then the step's timeout
