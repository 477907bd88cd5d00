"""The unit tier's one stack: the gateway's use cases (GatewayService) over fakes of its ports. A module sets its
limits by overriding `limits`; `fakes` gives the test the classifier, embedder and index the service uses."""

from __future__ import annotations

import pytest

from fashionsearch.store.brute import BruteForceIndex
from services.gateway.limits import Limits
from services.gateway.service import GatewayService
from testkit.gateway_fakes import FakeClassifier, FakeEmbedder


@pytest.fixture
def limits() -> Limits:
    return Limits(max_top_k=10)


@pytest.fixture
def fakes() -> tuple[FakeClassifier, FakeEmbedder, BruteForceIndex]:
    return FakeClassifier(), FakeEmbedder(), BruteForceIndex()


@pytest.fixture
def service(fakes: tuple[FakeClassifier, FakeEmbedder, BruteForceIndex], limits: Limits) -> GatewayService:
    classifier, embedder, index = fakes
    return GatewayService(classifier, embedder, index, limits)
