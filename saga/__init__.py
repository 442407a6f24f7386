"""A compensating saga orchestrator over DynamoDB and the transactional outbox.

Declare a ``SagaDefinition`` (steps with kinds, actions and compensations), register each step's
work in a ``StepRegistry``, create sagas in your own transaction with
``Orchestrator.start_items``, call ``Orchestrator.handle`` from each step's Celery task, and run
``python -m saga sweep`` to resume stuck sagas.
"""

from __future__ import annotations

from saga.definition import SagaDefinition, Step, StepKind, TaskRef
from saga.exceptions import (
    ConcurrentTransition,
    InvalidDefinition,
    RetryAfter,
    SagaError,
    SagaNotFound,
    StepFailed,
)
from saga.orchestrator import Command, Orchestrator
from saga.state import HistoryEntry, SagaState, SagaStatus
from saga.steps import StepHandler, StepRegistry, StepResult, StepWork
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
    "RetryAfter",
    "RetryPolicy",
    "SagaDefinition",
    "SagaError",
    "SagaNotFound",
    "SagaState",
    "SagaStatus",
    "SagaStore",
    "Step",
    "StepFailed",
    "StepHandler",
    "StepKind",
    "StepRegistry",
    "StepResult",
    "StepWork",
    "Sweeper",
    "TaskRef",
]
