"""Run the real Pulumi program under plain mocks, once per committed ``Pulumi.<stack>.yaml``."""

from __future__ import annotations

import pytest
from mocked_stack import PlainMocks, ProgramRun, read_config

from infra.program import run_program, stack_files, stack_name


@pytest.fixture(scope="session", params=stack_files(), ids=stack_name)
def run(request: pytest.FixtureRequest) -> ProgramRun:
    stack = stack_name(request.param)
    mocks = PlainMocks()
    outputs = run_program(mocks, stack)
    return ProgramRun(stack, read_config(stack), outputs, mocks.declared)
