"""The integration tier's one stack: classifier, embedder and gateway as in-process grpc.aio servers on free ports
(testkit.gateway_stack), shared by a module's tests. A module sets what it needs by overriding `stack_settings`
(keyword arguments of `start_stack`); one that needs a fresh stack per test overrides `stack` itself."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from testkit.gateway_stack import Stack, start_stack


@pytest.fixture(scope="module")
def stack_settings() -> dict[str, Any]:
    return {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, stack_settings: dict[str, Any]) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("stack"), **stack_settings)
    try:
        yield running
    finally:
        running.close()
