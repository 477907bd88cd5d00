"""deploy/kubernetes read as documents, for the tests that check the manifests."""

from __future__ import annotations

from pathlib import Path

import yaml  # type: ignore[import-untyped]  # dev only: no stubs in the locks

from testkit.settings_env import REPO

KUBERNETES = REPO / "deploy" / "kubernetes"


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def base_docs() -> list[dict]:
    return [doc for path in sorted((KUBERNETES / "base").glob("*.yaml")) for doc in documents(path)]
