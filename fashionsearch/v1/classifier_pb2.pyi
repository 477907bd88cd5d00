from fashionsearch.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Classification(_message.Message):
    __slots__ = ("attributes", "suggested_name", "keywords", "embedding")
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_NAME_FIELD_NUMBER: _ClassVar[int]
    KEYWORDS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    attributes: _containers.RepeatedCompositeFieldContainer[_common_pb2.AttributePrediction]
    suggested_name: str
    keywords: _containers.RepeatedScalarFieldContainer[str]
    embedding: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, attributes: _Optional[_Iterable[_Union[_common_pb2.AttributePrediction, _Mapping]]] = ..., suggested_name: _Optional[str] = ..., keywords: _Optional[_Iterable[str]] = ..., embedding: _Optional[_Iterable[float]] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("image", "top_k", "with_embedding")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    WITH_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    top_k: int
    with_embedding: bool
    def __init__(self, image: _Optional[bytes] = ..., top_k: _Optional[int] = ..., with_embedding: _Optional[bool] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("classification", "model", "embedder_model")
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    classification: Classification
    model: _common_pb2.ModelInfo
    embedder_model: _common_pb2.ModelInfo
    def __init__(self, classification: _Optional[_Union[Classification, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., embedder_model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...

class ClassifyBatchRequest(_message.Message):
    __slots__ = ("images", "top_k", "with_embedding")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    WITH_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    top_k: int
    with_embedding: bool
    def __init__(self, images: _Optional[_Iterable[bytes]] = ..., top_k: _Optional[int] = ..., with_embedding: _Optional[bool] = ...) -> None: ...

class ClassifyResult(_message.Message):
    __slots__ = ("classification", "error")
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    classification: Classification
    error: _common_pb2.ItemError
    def __init__(self, classification: _Optional[_Union[Classification, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ...) -> None: ...

class ClassifyBatchResponse(_message.Message):
    __slots__ = ("results", "model", "embedder_model")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ClassifyResult]
    model: _common_pb2.ModelInfo
    embedder_model: _common_pb2.ModelInfo
    def __init__(self, results: _Optional[_Iterable[_Union[ClassifyResult, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., embedder_model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...
