"""The locks (requirements/*.txt) agree with the loose requirements (requirements/*.in) and with each other.

`make lock` writes the locks with pip-compile; these checks catch a hand edit, an .in changed without `make lock`,
and sets that drifted apart (training is compiled against serving's pins, dev against training's).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements"
# Each set extends the one before it: its lock must hold the same pins for every package they share.
CHAIN = ("serving", "training", "dev")
SETS = (*CHAIN, "lock-tools")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def loose_requirements(name: str) -> list[Requirement]:
    """The requirements of requirements/<name>.in, following its `-r` includes (`-c` constraints are the locks)."""
    found: list[Requirement] = []
    for line in (REQUIREMENTS / f"{name}.in").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-c "):
            continue
        if line.startswith("-r "):
            found += loose_requirements(line[3:].strip().removesuffix(".in"))
            continue
        assert not line.startswith("-"), f"{name}.in: unexpected option {line!r}"
        found.append(Requirement(line))
    return found


def lock_entries(name: str) -> dict[str, tuple[str, list[str]]]:
    """requirements/<name>.txt as {canonical name: (requirement text, its hashes)}, continuation lines joined."""
    text = (REQUIREMENTS / f"{name}.txt").read_text()
    entries: dict[str, tuple[str, list[str]]] = {}
    for logical in re.sub(r"\\\n", " ", text).splitlines():
        logical = logical.split("#", 1)[0].strip()
        if not logical:
            continue
        assert not logical.startswith("--hash"), f"{name}.txt: a hash outside a requirement (a lost `\\`): {logical}"
        requirement_text = logical.split(" --hash", 1)[0].strip()
        assert not requirement_text.startswith("-"), f"{name}.txt: options belong in pip's config, not the lock"
        key = canonicalize_name(Requirement(requirement_text).name)
        assert key not in entries, f"{name}.txt lists {key} twice"
        entries[key] = (requirement_text, HASH.findall(logical))
    return entries


def pins(name: str) -> dict[str, Version]:
    return {key: Version(text.split("==", 1)[1]) for key, (text, _) in lock_entries(name).items()}


@pytest.mark.parametrize("name", SETS)
def test_every_lock_line_is_an_exact_pin_with_hashes(name):
    entries = lock_entries(name)
    assert entries, f"{name}.txt is empty"
    for key, (text, hashes) in entries.items():
        requirement = Requirement(text)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"{name}.txt: {text!r} is not pinned with =="
        assert "*" not in specifiers[0].version, f"{name}.txt: {text!r} is a range, not a pin"
        assert not requirement.marker and not requirement.url, f"{name}.txt: {text!r} has a marker or URL"
        assert hashes, f"{name}.txt: {key} has no --hash (run `make lock`)"


@pytest.mark.parametrize("name", SETS)
def test_every_loose_requirement_is_satisfied_by_its_lock(name):
    locked = pins(name)
    for requirement in loose_requirements(name):
        key = canonicalize_name(requirement.name)
        assert key in locked, f"{name}.in needs {requirement} but {name}.txt does not lock it (run `make lock`)"
        assert requirement.specifier.contains(locked[key], prereleases=True), (
            f"{name}.in needs {requirement} but {name}.txt pins {locked[key]} (run `make lock`)"
        )


def test_each_set_holds_the_pins_of_the_set_it_extends():
    for smaller, larger in zip(CHAIN, CHAIN[1:], strict=False):
        small, large = pins(smaller), pins(larger)
        missing = sorted(set(small) - set(large))
        assert not missing, f"{larger}.txt lacks {missing} that {smaller}.txt locks (run `make lock`)"
        differ = {key: (str(small[key]), str(large[key])) for key in small if small[key] != large[key]}
        assert not differ, f"{smaller}.txt and {larger}.txt pin different versions: {differ}"


def test_pyproject_dependencies_are_the_serving_requirements():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = {str(Requirement(text)) for text in pyproject["project"]["dependencies"]}
    # serving.in also carries the build backend, so that the editable install uses a locked setuptools.
    declared |= {str(Requirement(text)) for text in pyproject["build-system"]["requires"]}
    assert {str(requirement) for requirement in loose_requirements("serving")} == declared
