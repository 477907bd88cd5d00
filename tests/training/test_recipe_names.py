"""Recipes are named for what they build; the names of version 0.1 still run, for one version, with a warning."""

from __future__ import annotations

import logging

import pytest

from training.recipe import DEPRECATED_NAMES, RECIPES, get_recipe, recipe_name

pytestmark = pytest.mark.training


def test_scratch_recipes_have_scratch_names_and_the_old_names_still_run(caplog):
    assert {"scratch-classifier", "scratch-classifier-heads", "scratch-embedder"} <= set(RECIPES)
    assert not set(DEPRECATED_NAMES) & set(RECIPES)
    with caplog.at_level(logging.WARNING, logger="training.recipe"):
        assert recipe_name("classifier") == "scratch-classifier"
        assert get_recipe("embedder") is get_recipe("scratch-embedder")
    assert "deprecated" in caplog.text and "scratch-classifier" in caplog.text
    caplog.clear()
    assert recipe_name("lite-classifier") == "lite-classifier" and not caplog.text


def test_an_unknown_recipe_names_the_known_ones():
    with pytest.raises(SystemExit, match="scratch-classifier"):
        get_recipe("classifer")
