"""The local AWS stack: LocalStack (SQS, SNS, CloudWatch, SES) and a serialized moto server
(DynamoDB, DynamoDB Streams) on loopback, started and stopped by the project's own code.

``up()`` returns the standard AWS SDK variables that point any boto3 client at them; the
application itself never knows it runs against emulators. CLI: ``python -m infra.local``.
"""

from __future__ import annotations

from .config import StackConfig
from .environment import environment
from .localstack_venv import InstallError
from .stack import EmulatorStatus, StackError, down, status, up

__all__ = [
    "EmulatorStatus",
    "InstallError",
    "StackConfig",
    "StackError",
    "down",
    "environment",
    "status",
    "up",
]
