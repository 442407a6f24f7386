"""The purchase saga end to end over moto: allocation creates sagas, steps run from the
outbox's commands, compensations undo in reverse, the sweeper resumes and expires."""

from __future__ import annotations

from collections.abc import Callable

from moto_tables import Tables
from saga_driver import EVENT, Clock, Driver

from saga import SagaStatus, Sweeper


def fulfilment(tables: Tables, order_id: str) -> str | None:
    return next(o for o in tables.orders_of(EVENT) if o["order_id"] == order_id).get("fulfilment")


def test_saga__happy_path_charges_tickets_and_confirms_once(
    tables: Tables, driver: Driver, sell: Callable[..., list[str]]
) -> None:
    orders = sell(capacity=3, buyers=3)

    driver.run_all()

    assert {driver.status(o) for o in orders} == {SagaStatus.COMPLETED}
    assert {fulfilment(tables, o) for o in orders} == {"ticketed"}
    assert driver.provider.captured() == set(orders)
    assert sorted(driver.notified) == sorted(("confirmation", o) for o in orders)
    assert tables.sold(EVENT) == 3


def test_saga__a_decline_releases_the_seat_and_tells_the_buyer(
    tables: Tables, driver: Driver, sell: Callable[..., list[str]]
) -> None:
    declined, paid = sell(capacity=2, buyers=2)
    driver.provider.declined.add(declined)

    driver.run_all()

    assert driver.status(declined) is SagaStatus.COMPENSATED
    assert driver.status(paid) is SagaStatus.COMPLETED
    assert fulfilment(tables, declined) == "released"
    assert tables.sold(EVENT) == 1  # the declined seat is back on sale
    assert ("cancellation", declined) in driver.notified
    assert ("tasks.payment.refund", declined) not in driver.delivered  # nothing was charged
    assert driver.provider.captured() == {paid}


def test_saga__a_released_seat_is_sold_to_a_later_buyer(
    tables: Tables, driver: Driver, sell: Callable[..., list[str]]
) -> None:
    first, _ = sell(capacity=1, buyers=2)
    driver.provider.declined.add(first)
    driver.run_all()

    (late,) = sell(capacity=1, buyers=1, first=3)
    driver.run_all()

    assert driver.status(late) is SagaStatus.COMPLETED
    assert tables.sold(EVENT) == 1 and driver.provider.captured() == {late}


def test_saga__ticketing_failing_refunds_then_releases(
    tables: Tables, driver: Driver, sell: Callable[..., list[str]]
) -> None:
    (order,) = sell(capacity=1, buyers=1)
    driver.ticket_fault_rate = 1.0

    driver.run_all()

    assert [task for task, _ in driver.delivered] == [
        "tasks.payment.charge", "tasks.tickets.issue", "tasks.payment.refund",
        "tasks.tickets.release_seat", "tasks.notify.cancellation",
    ]  # fmt: skip
    assert driver.provider.refunds == {order: "refunded"} and not driver.provider.captured()
    assert tables.sold(EVENT) == 0 and fulfilment(tables, order) == "released"


def test_saga__a_redelivered_command_has_no_second_effect(
    tables: Tables, driver: Driver, sell: Callable[..., list[str]]
) -> None:
    (order,) = sell(capacity=1, buyers=1)
    (charge,) = driver.pending()
    driver.deliver(charge)

    assert driver.deliver(charge) == "stale"
    driver.run_all()
    assert driver.provider.calls == [("charge", order)]
    assert driver.notified == [("confirmation", order)]


def test_saga__provider_errors_are_retried_with_the_same_key(
    driver: Driver, sell: Callable[..., list[str]]
) -> None:
    (order,) = sell(capacity=1, buyers=1)
    driver.provider.failures = 2

    driver.run_all()

    assert driver.status(order) is SagaStatus.COMPLETED
    assert driver.provider.calls == [("charge", order)] * 3
    state = driver.orchestrator.store.get(order)
    assert state is not None
    assert [h.event for h in state.history if h.step == "charge_payment"] == [
        "retrying", "retrying", "succeeded",
    ]  # fmt: skip


def test_saga__a_step_that_keeps_failing_is_compensated_including_itself(
    tables: Tables, driver: Driver, sell: Callable[..., list[str]]
) -> None:
    (order,) = sell(capacity=1, buyers=1)
    driver.provider.failures = 3  # every charge attempt (policy: 3 attempts)

    driver.run_all()

    assert driver.status(order) is SagaStatus.COMPENSATED
    assert driver.provider.refunds == {order: "voided"}  # a late charge would be refused
    assert tables.sold(EVENT) == 0


def test_saga__a_compensation_that_keeps_failing_is_quarantined_then_resumed(
    tables: Tables, driver: Driver, sell: Callable[..., list[str]]
) -> None:
    (order,) = sell(capacity=1, buyers=1)
    driver.ticket_fault_rate = 1.0
    (charge,) = driver.pending()
    driver.deliver(charge)
    (ticket,) = driver.pending()
    driver.deliver(ticket)
    driver.provider.failures = 3  # every refund attempt

    driver.run_all()
    assert driver.status(order) is SagaStatus.QUARANTINED
    sweeper = Sweeper({"purchase": driver.orchestrator}, driver.orchestrator.store)
    assert sweeper.quarantined() == 1

    assert driver.orchestrator.resume(order) == "resumed"
    driver.run_all()
    assert driver.status(order) is SagaStatus.COMPENSATED and sweeper.quarantined() == 0
    assert tables.sold(EVENT) == 0 and not driver.provider.captured()


def test_sweeper__resends_a_lost_command_and_expires_a_hold(
    tables: Tables, driver: Driver, clock: Clock, sell: Callable[..., list[str]]
) -> None:
    lost, expired = sell(capacity=2, buyers=2)
    sweeper = Sweeper({"purchase": driver.orchestrator}, driver.orchestrator.store, clock=clock)
    for record in driver.pending():
        driver.done.add(record["event_id"])  # both charge commands lost with a crashed worker
    assert sweeper.sweep_once().due == 0

    clock.now += 200  # past the step timeout (120 s), before the hold expires (600 s)
    assert sweeper.sweep_once().outcomes == {"retrying": 2}
    for record in driver.pending():
        if record["aggregate_id"] == expired:
            driver.done.add(record["event_id"])  # lost again
    driver.run_all()  # the resent charge, then the rest of its saga
    clock.now += 600
    sweeper.sweep_once()
    driver.run_all()

    assert driver.status(lost) is SagaStatus.COMPLETED
    assert driver.status(expired) is SagaStatus.COMPENSATED
    assert fulfilment(tables, expired) == "released" and tables.sold(EVENT) == 1


class CountingWrites:
    def __init__(self, ddb: object) -> None:
        self._ddb = ddb
        self.transactions = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._ddb, name)

    def transact_write_items(self, **kwargs: object) -> object:
        self.transactions += 1
        return self._ddb.transact_write_items(**kwargs)  # type: ignore[attr-defined]


def test_saga__runs_ahead_charge_ticket_and_confirmation_in_one_transaction(
    tables: Tables, driver: Driver, sell: Callable[..., list[str]]
) -> None:
    (order,) = sell(capacity=1, buyers=1)
    counting = CountingWrites(tables.ddb)
    driver.orchestrator.store.dynamodb = counting

    driver.run_all()

    assert [task for task, _ in driver.delivered] == ["tasks.payment.charge"]
    assert counting.transactions == 1
    state = driver.orchestrator.store.get(order)
    assert state is not None and state.status is SagaStatus.COMPLETED
    assert [(h.step, h.event) for h in state.history] == [
        ("reserve_seat", "succeeded"), ("charge_payment", "succeeded"),
        ("issue_ticket", "succeeded"), ("notify_buyer", "succeeded"),
    ]  # fmt: skip
    assert fulfilment(tables, order) == "ticketed"


def test_saga__a_step_that_fails_running_ahead_is_left_to_its_own_command(
    tables: Tables, driver: Driver, sell: Callable[..., list[str]]
) -> None:
    (order,) = sell(capacity=1, buyers=1)
    driver.confirm_failures = 1  # SES refuses the first try, made while running ahead

    driver.run_all()

    assert [task for task, _ in driver.delivered] == [
        "tasks.payment.charge", "tasks.notify.confirmation",
    ]  # fmt: skip
    assert driver.status(order) is SagaStatus.COMPLETED
    assert driver.notified == [("confirmation", order)]
