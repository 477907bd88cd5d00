"""The detector behind a small Protocol, and its ONNX Runtime adapter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from fashionsearch.detection import BoxVerification, Detection, run_detector
from fashionsearch.model_contract import preprocess
from fashionsearch.onnx_model import ModelIdentity, OnnxAdapter, OnnxModel


class Detector(Protocol):
    """What the servicer needs from a detector."""

    @property
    def identity(self) -> ModelIdentity: ...

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the model sees; lets the decoder skip pixels it would throw away."""
        ...

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detect in RGB images (uint8 HxWx3) in one model call; per image its detections, in that image's pixels."""
        ...

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """One RGB image (uint8 HxWx3) -> its model input row, for detect_prepared."""
        ...

    def detect_prepared(
        self,
        batch: np.ndarray,
        sizes: Sequence[tuple[int, int]],
        flip_test: bool | None = None,
        score_threshold: float | None = None,
    ) -> list[list[Detection]]:
        """Detect in a stack of prepare() rows in one model call; `sizes` are the images' (width, height).
        `score_threshold`: down to this score instead of the served one (the box verification's candidates)."""
        ...

    @property
    def verification(self) -> BoxVerification | None:
        """The model's box verification (model.json), for callers that ask for candidates."""
        ...

    @property
    def flip_test(self) -> bool:
        """Whether a call that does not choose gets the flip test."""
        ...

    def served_threshold(self, flip_test: bool) -> float:
        """The score a detection needs to be served with the flip test or without."""
        ...

    def warm_up(self, batch_size: int = 1) -> None: ...


class OnnxDetector(OnnxAdapter):
    """A CenterNet-style detector in ONNX, described by its model.json (DETECTOR_CONTRACT.md)."""

    kind = "detector"

    def __init__(self, model: OnnxModel) -> None:
        if model.spec.kind != "detector" or model.spec.detection is None:
            raise ValueError(f"{model.spec.identity} is a {model.spec.kind}, not a detector")
        super().__init__(model)
        #: Each photo and its mirror image in one model run, their maps averaged (DETECTOR_FLIP_TEST); model.json's
        #: choice until the service sets it. A call may choose otherwise (DetectRequest.flip_test).
        self.flip_test = model.spec.detection.flip_test
        self._verification = BoxVerification.of(model.spec)  # a malformed rule refuses to start, as a bad model.json

    @property
    def score_threshold(self) -> float:
        """The score a detection needs to be served, in the mode served (model.json keeps one per mode)."""
        return self.served_threshold(self.flip_test)

    def served_threshold(self, flip_test: bool) -> float:
        assert self._model.spec.detection is not None
        return self._model.spec.detection.served_threshold(flip_test)

    @property
    def groups(self) -> tuple[str, ...]:
        assert self._model.spec.detection is not None  # guaranteed by ModelSpec validation
        return tuple(group.name for group in self._model.spec.detection.groups)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        if not images:
            return []
        sizes = [(image.shape[1], image.shape[0]) for image in images]
        return self.detect_prepared(preprocess(images, self._model.spec.input), sizes)

    def detect_prepared(
        self,
        batch: np.ndarray,
        sizes: Sequence[tuple[int, int]],
        flip_test: bool | None = None,
        score_threshold: float | None = None,
    ) -> list[list[Detection]]:
        if len(batch) == 0:
            return []
        flip = self.flip_test if flip_test is None else flip_test
        spec = self._model.spec
        return run_detector(self._model.run, batch, spec, sizes, flip_test=flip, score_threshold=score_threshold)

    @property
    def verification(self) -> BoxVerification | None:
        return self._verification

    def warm_up(self, batch_size: int = 1) -> None:
        # Any call may ask for the flip test, in which the model sees twice the photos: take that memory before
        # SERVING too.
        super().warm_up(2 * batch_size)
