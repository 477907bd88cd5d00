from fashionsearch.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Detection(_message.Message):
    __slots__ = ("box", "group", "score", "sub_categories")
    BOX_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SUB_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    box: _common_pb2.Box
    group: str
    score: float
    sub_categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, box: _Optional[_Union[_common_pb2.Box, _Mapping]] = ..., group: _Optional[str] = ..., score: _Optional[float] = ..., sub_categories: _Optional[_Iterable[str]] = ...) -> None: ...

class Detections(_message.Message):
    __slots__ = ("detections", "image_width", "image_height")
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    image_width: int
    image_height: int
    def __init__(self, detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ...) -> None: ...

class DetectRequest(_message.Message):
    __slots__ = ("image", "flip_test", "with_candidates")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FLIP_TEST_FIELD_NUMBER: _ClassVar[int]
    WITH_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    flip_test: bool
    with_candidates: bool
    def __init__(self, image: _Optional[bytes] = ..., flip_test: _Optional[bool] = ..., with_candidates: _Optional[bool] = ...) -> None: ...

class BoxVerification(_message.Message):
    __slots__ = ("candidate_threshold", "intercept", "score_weight", "confidence_weight", "keep_probability", "classifier")
    CANDIDATE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    INTERCEPT_FIELD_NUMBER: _ClassVar[int]
    SCORE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    KEEP_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_FIELD_NUMBER: _ClassVar[int]
    candidate_threshold: float
    intercept: float
    score_weight: float
    confidence_weight: float
    keep_probability: float
    classifier: str
    def __init__(self, candidate_threshold: _Optional[float] = ..., intercept: _Optional[float] = ..., score_weight: _Optional[float] = ..., confidence_weight: _Optional[float] = ..., keep_probability: _Optional[float] = ..., classifier: _Optional[str] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("detections", "model", "verification", "score_threshold")
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    detections: Detections
    model: _common_pb2.ModelInfo
    verification: BoxVerification
    score_threshold: float
    def __init__(self, detections: _Optional[_Union[Detections, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., verification: _Optional[_Union[BoxVerification, _Mapping]] = ..., score_threshold: _Optional[float] = ...) -> None: ...

class DetectBatchRequest(_message.Message):
    __slots__ = ("images", "flip_test")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    FLIP_TEST_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    flip_test: bool
    def __init__(self, images: _Optional[_Iterable[bytes]] = ..., flip_test: _Optional[bool] = ...) -> None: ...

class DetectResult(_message.Message):
    __slots__ = ("detections", "error")
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    detections: Detections
    error: _common_pb2.ItemError
    def __init__(self, detections: _Optional[_Union[Detections, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ...) -> None: ...

class DetectBatchResponse(_message.Message):
    __slots__ = ("results", "model")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DetectResult]
    model: _common_pb2.ModelInfo
    def __init__(self, results: _Optional[_Iterable[_Union[DetectResult, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...
