"""The e2e tier's one stack: classifier, embedder and gateway as separate processes (testkit.process_stack), shared
by a module's tests and stopped at its end, where every service must exit cleanly. A module sets what it needs by
overriding `stack_options` (keyword arguments of ProcessStack: gateway_env, classifier_env, http_port, ...)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from testkit.process_stack import ProcessStack


@pytest.fixture(scope="module")
def stack_options() -> dict[str, Any]:
    return {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, stack_options: dict[str, Any]) -> Iterator[ProcessStack]:
    running = ProcessStack(tmp_path_factory.mktemp("stack"), **stack_options).start()
    try:
        yield running
    finally:
        codes = running.stop()
    assert all(code == 0 for code in codes.values()), f"a service did not stop cleanly: {codes}"
