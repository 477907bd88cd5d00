"""The text embedder behind a small Protocol, and its ONNX Runtime adapter.

A text model is served only beside the image embedder whose space it was trained to meet: `OnnxTextEmbedder`
refuses (ModelContractError, so the service does not start) a model.json whose target is another name@version.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from fashionsearch.errors import InvalidArgument
from fashionsearch.model_contract import ModelContractError
from fashionsearch.onnx_model import ModelIdentity, checked_onnx_file, open_session, shape_matches
from fashionsearch.text_contract import TextModelSpec, check_query, check_target, no_words_reason, tokenize, words
from fashionsearch.text_query import QueryVocabulary, Understanding

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextVector:
    """One query's vector and what its words were read as."""

    vector: np.ndarray
    understanding: Understanding


class TextEmbedder(Protocol):
    """What the servicer needs from a text embedder."""

    @property
    def identity(self) -> ModelIdentity: ...

    def embed(self, queries: Sequence[str]) -> list[TextVector | InvalidArgument]:
        """One outcome per query, in order: its vector (one model call for the batch), or why it is refused."""
        ...

    def warm_up(self) -> None: ...


class OnnxTextEmbedder:
    """A text_embedder model.json + model.onnx, checked against each other and against the image embedder."""

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        image_model: ModelIdentity,
        *,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
    ) -> None:
        directory = Path(model_dir)
        self.spec = TextModelSpec.load(directory)
        check_target(self.spec, image_model.name, image_model.version)
        onnx_path, self._sha256 = checked_onnx_file(directory, self.spec.onnx_sha256)
        self._session = open_session(onnx_path, intra_op_threads, inter_op_threads)
        problems = self._check_signature()
        if problems:
            raise ModelContractError(
                f"{onnx_path} does not match its model.json ({self.spec.identity}):\n  - " + "\n  - ".join(problems)
            )
        self.vocabulary = QueryVocabulary(self.spec.terms, self.spec.known_words)

    def _check_signature(self) -> list[str]:
        problems = []
        inputs, outputs = self._session.get_inputs(), {o.name: o for o in self._session.get_outputs()}
        if len(inputs) != 1 or inputs[0].name != self.spec.input or inputs[0].type != "tensor(int32)":
            problems.append(
                f"expected one int32 input {self.spec.input!r}, the model has {[(i.name, i.type) for i in inputs]}"
            )
        elif not shape_matches(inputs[0].shape, ["batch", None]):
            problems.append(f"input {self.spec.input!r} must be [batch, length], the model has {inputs[0].shape}")
        output = outputs.get(self.spec.embedding.output)
        if output is None:
            problems.append(f"output {self.spec.embedding.output!r} is missing; the model has {sorted(outputs)}")
        elif not shape_matches(output.shape, ["batch", self.spec.embedding.dim]):
            problems.append(f"output shape must be [batch, {self.spec.embedding.dim}], the model has {output.shape}")
        return problems

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(self.spec.name, self.spec.version, self._sha256)

    @property
    def dim(self) -> int:
        return self.spec.embedding.dim

    def _vectors(self, queries: Sequence[str]) -> np.ndarray:
        tokens = tokenize(queries, self.spec.tokenizer)
        out = self._session.run([self.spec.embedding.output], {self.spec.input: tokens})[0]
        return np.asarray(out, dtype=np.float32)

    def embed(self, queries: Sequence[str]) -> list[TextVector | InvalidArgument]:
        checked: list[str | InvalidArgument] = []
        for query in queries:
            try:
                text = check_query(query)
                if not words(text):
                    raise InvalidArgument(no_words_reason(text))
                checked.append(text)
            except InvalidArgument as error:
                checked.append(error)
        good = [q for q in checked if isinstance(q, str)]
        vectors = iter(self._vectors(good)) if good else iter(())
        return [TextVector(next(vectors), self.vocabulary.understand(q)) if isinstance(q, str) else q for q in checked]

    def warm_up(self) -> None:
        vector = self._vectors(["warm up"])
        if vector.shape != (1, self.dim) or not np.all(np.isfinite(vector)):
            raise ModelContractError(f"warm-up: the text model gave {vector.shape}, expected (1, {self.dim})")
        logger.info("warm-up passed for %s (targets %s)", self.spec.identity, self.spec.target)
