"""A compensating saga orchestrator over DynamoDB and the transactional outbox.

Declare a ``SagaDefinition`` (steps with kinds, actions and compensations), create sagas in your
own transaction with ``Orchestrator.start_items``, run each step's work from its Celery task with
``Orchestrator.handle``, and run ``python -m saga sweep`` to resume stuck sagas.
"""

from __future__ import annotations

from saga.definition import SagaDefinition, Step, StepKind, TaskRef
from saga.exceptions import (
    ConcurrentTransition,
    InvalidDefinition,
    SagaError,
    SagaNotFound,
    StepFailed,
)
from saga.orchestrator import Command, Orchestrator, StepResult
from saga.state import HistoryEntry, SagaState, SagaStatus
from saga.store import SagaStore
from saga.sweeper import Sweeper
from saga.transitions import Planner, RetryPolicy

__all__ = [
    "Command",
    "ConcurrentTransition",
    "HistoryEntry",
    "InvalidDefinition",
    "Orchestrator",
    "Planner",
    "RetryPolicy",
    "SagaDefinition",
    "SagaError",
    "SagaNotFound",
    "SagaState",
    "SagaStatus",
    "SagaStore",
    "Step",
    "StepFailed",
    "StepKind",
    "StepResult",
    "Sweeper",
    "TaskRef",
]
