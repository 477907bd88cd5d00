"""The text tokenizer, query checks and the text model's model.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fashionsearch.errors import InvalidArgument
from fashionsearch.model_contract import EmbeddingSpec, ModelContractError
from fashionsearch.text_contract import (
    MAX_QUERY_CHARS,
    Target,
    Term,
    TextModelSpec,
    TokenizerSpec,
    check_query,
    check_target,
    text_ids,
    tokenize,
    words,
)

SPEC = TokenizerSpec()


def shared(a: str, b: str) -> float:
    """Share of a's ids that b also has (a bag-of-n-grams overlap)."""
    ids_a, ids_b = set(text_ids(a, SPEC)), set(text_ids(b, SPEC))
    return len(ids_a & ids_b) / len(ids_a)


def test_words_fold_case_accents_and_punctuation():
    assert words("  Crème BRÛLÉE t-shirt, 2-pack!") == ["creme", "brulee", "t", "shirt", "2", "pack"]


def test_ids_are_deterministic_and_within_the_buckets():
    ids = text_ids("Puma Men Grey T-shirt", SPEC)
    assert ids == text_ids("puma men grey t shirt", SPEC)
    assert all(1 <= i <= SPEC.buckets for i in ids)
    # crc32 is fixed by the contract: the same text gives the same ids in any process and any Python version.
    assert text_ids("jeans", TokenizerSpec(buckets=1000))[:3] == [
        1 + __import__("zlib").crc32(g.encode()) % 1000 for g in ("<j", "je", "ea")
    ]


def test_typos_plurals_and_spacing_keep_most_ngrams():
    assert shared("jeans", "jeens") > 0.3
    assert shared("tshirts", "tshirt") > 0.6
    assert shared("t shirt", "tshirt") > 0.6  # a short word also forms a word with the next one
    assert shared("jeans", "watch") == 0.0


def test_tokenize_pads_with_zero_to_the_longest_text():
    batch = tokenize(["red", "navy blue kurta", ""], SPEC)
    assert batch.dtype == np.int32 and batch.shape[0] == 3
    assert batch.shape[1] == len(text_ids("navy blue kurta", SPEC))
    assert (batch[2] == 0).all() and (batch[0] > 0).sum() == len(text_ids("red", SPEC))
    assert tokenize([], SPEC).shape == (0, 1)


def test_ids_stop_at_max_ids():
    assert len(text_ids("word " * 200, TokenizerSpec(max_ids=50))) == 50


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "empty"),
        ("   \t ", "empty"),
        ("x" * (MAX_QUERY_CHARS + 1), "characters long"),
        ("red\x00shirt", "control"),
        ("red\u202eshirt", "control"),
    ],
)
def test_bad_queries_are_refused_with_a_reason(query, message):
    with pytest.raises(InvalidArgument, match=message):
        check_query(query)


def test_a_good_query_comes_back_stripped():
    assert check_query("  women blue kurtas ") == "women blue kurtas"
    assert check_query("x" * MAX_QUERY_CHARS) == "x" * MAX_QUERY_CHARS


def spec(**changes) -> TextModelSpec:
    fields = dict(
        name="text",
        version="1",
        onnx_sha256="ab",
        input="tokens",
        tokenizer=SPEC,
        embedding=EmbeddingSpec(output="embedding", dim=8),
        target=Target("embedder", "5", "cd"),
        terms=(Term("red", "baseColour", "Red", 0.8, 10),),
        known_words={"red": 3},
    )
    return TextModelSpec(**(fields | changes))


def test_model_json_round_trips(tmp_path):
    original = spec(metrics={"test": {"x": 1}})
    original.write(tmp_path)
    data = json.loads((tmp_path / "model.json").read_text())
    assert data["kind"] == "text_embedder" and data["target"] == {
        "name": "embedder",
        "version": "5",
        "onnx_sha256": "cd",
    }
    assert TextModelSpec.load(tmp_path) == original


def test_model_json_problems_are_named(tmp_path):
    original = spec().to_dict()
    for broken, message in [
        ({**original, "kind": "embedder"}, "text_embedder"),
        ({k: v for k, v in original.items() if k != "target"}, "target"),
        ({**original, "tokenizer": {**original["tokenizer"], "hash": "md5"}}, "crc32"),
        ({**original, "embedding": {"output": "e", "dim": 0}}, "dim"),
    ]:
        (tmp_path / "model.json").write_text(json.dumps(broken))
        with pytest.raises(ModelContractError, match=message):
            TextModelSpec.load(tmp_path)


def test_a_text_model_for_another_image_embedder_is_refused():
    check_target(spec(), "embedder", "5")
    with pytest.raises(ModelContractError, match=r"trained for the image embedder embedder@5.*embedder@6"):
        check_target(spec(), "embedder", "6")
