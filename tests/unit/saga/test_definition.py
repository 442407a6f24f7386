"""Saga definitions are checked when they are declared."""

from __future__ import annotations

import pytest

from flashsale.names import QueueRole
from saga import InvalidDefinition, SagaDefinition, Step, StepKind, TaskRef
from tasks.purchase_saga import purchase_definition

T = TaskRef("t.do", QueueRole.PAYMENTS)
U = TaskRef("t.undo", QueueRole.PAYMENTS)


def step(name: str, kind: StepKind, *, undo: bool | None = None, action: bool = True) -> Step:
    has_undo = kind is StepKind.COMPENSATABLE if undo is None else undo
    return Step(name, kind, action=T if action else None, compensation=U if has_undo else None)


def test_definition__the_purchase_saga_is_valid() -> None:
    definition = purchase_definition(60)

    assert [s.kind for s in definition.steps] == [
        StepKind.COMPENSATABLE, StepKind.COMPENSATABLE, StepKind.PIVOT, StepKind.RETRIABLE,
    ]  # fmt: skip
    assert definition.first_action == 1


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((), "no steps"),
        ((step("a", StepKind.PIVOT), step("b", StepKind.COMPENSATABLE)), "must be compensatable"),
        ((step("a", StepKind.RETRIABLE), step("b", StepKind.PIVOT)), "must be compensatable"),
        ((step("a", StepKind.PIVOT), step("b", StepKind.PIVOT)), "more than one pivot"),
        ((step("a", StepKind.COMPENSATABLE, undo=False),), "has no compensation"),
        ((step("a", StepKind.PIVOT, undo=True),), "cannot have a compensation"),
        ((step("a", StepKind.RETRIABLE, undo=True),), "cannot have a compensation"),
        ((step("a", StepKind.COMPENSATABLE), step("a", StepKind.PIVOT)), "repeats a step"),
        (
            (step("a", StepKind.COMPENSATABLE), step("b", StepKind.PIVOT, action=False)),
            "only leading steps",
        ),
        ((step("a", StepKind.COMPENSATABLE, action=False),), "only leading steps"),
    ],
)
def test_definition__refuses_what_could_leave_a_saga_half_undone(
    steps: tuple[Step, ...], message: str
) -> None:
    with pytest.raises(InvalidDefinition, match=message):
        SagaDefinition("bad", steps)


def test_definition__finds_the_compensatable_steps_below_a_step() -> None:
    definition = purchase_definition(60)

    assert definition.last_compensatable(below=3) == 1
    assert definition.last_compensatable(below=1) == 0
    assert definition.last_compensatable(below=0) is None
    assert definition.before_point_of_no_return(2)
    assert not definition.before_point_of_no_return(3)
    assert [definition.expirable(i) for i in range(4)] == [True, True, False, False]
