from fashionsearch.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FilterMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILTER_MODE_UNSPECIFIED: _ClassVar[FilterMode]
    FILTER_MODE_PREDICTED_SUBCATEGORY: _ClassVar[FilterMode]
    FILTER_MODE_NONE: _ClassVar[FilterMode]
    FILTER_MODE_EXPLICIT: _ClassVar[FilterMode]

class Crop(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CROP_UNSPECIFIED: _ClassVar[Crop]
    CROP_NONE: _ClassVar[Crop]
    CROP_AUTO: _ClassVar[Crop]

class TextMatch(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TEXT_MATCH_UNSPECIFIED: _ClassVar[TextMatch]
    TEXT_MATCH_VECTOR: _ClassVar[TextMatch]
    TEXT_MATCH_FILTERS: _ClassVar[TextMatch]
    TEXT_MATCH_BOTH: _ClassVar[TextMatch]
FILTER_MODE_UNSPECIFIED: FilterMode
FILTER_MODE_PREDICTED_SUBCATEGORY: FilterMode
FILTER_MODE_NONE: FilterMode
FILTER_MODE_EXPLICIT: FilterMode
CROP_UNSPECIFIED: Crop
CROP_NONE: Crop
CROP_AUTO: Crop
TEXT_MATCH_UNSPECIFIED: TextMatch
TEXT_MATCH_VECTOR: TextMatch
TEXT_MATCH_FILTERS: TextMatch
TEXT_MATCH_BOTH: TextMatch

class FieldFilter(_message.Message):
    __slots__ = ("field", "values")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    field: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, field: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class ItemPayload(_message.Message):
    __slots__ = ("name", "gender", "master_category", "sub_category", "article_type", "base_colour", "season", "year", "usage", "image_ref")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GENDER_FIELD_NUMBER: _ClassVar[int]
    MASTER_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    SUB_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    ARTICLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    BASE_COLOUR_FIELD_NUMBER: _ClassVar[int]
    SEASON_FIELD_NUMBER: _ClassVar[int]
    YEAR_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    name: str
    gender: str
    master_category: str
    sub_category: str
    article_type: str
    base_colour: str
    season: str
    year: int
    usage: str
    image_ref: str
    def __init__(self, name: _Optional[str] = ..., gender: _Optional[str] = ..., master_category: _Optional[str] = ..., sub_category: _Optional[str] = ..., article_type: _Optional[str] = ..., base_colour: _Optional[str] = ..., season: _Optional[str] = ..., year: _Optional[int] = ..., usage: _Optional[str] = ..., image_ref: _Optional[str] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("id", "distance", "payload")
    ID_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: int
    distance: float
    payload: ItemPayload
    def __init__(self, id: _Optional[int] = ..., distance: _Optional[float] = ..., payload: _Optional[_Union[ItemPayload, _Mapping]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("image", "top_k", "filter_mode", "filters", "refine_text", "crop")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FILTER_MODE_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    REFINE_TEXT_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    top_k: int
    filter_mode: FilterMode
    filters: _containers.RepeatedCompositeFieldContainer[FieldFilter]
    refine_text: str
    crop: Crop
    def __init__(self, image: _Optional[bytes] = ..., top_k: _Optional[int] = ..., filter_mode: _Optional[_Union[FilterMode, str]] = ..., filters: _Optional[_Iterable[_Union[FieldFilter, _Mapping]]] = ..., refine_text: _Optional[str] = ..., crop: _Optional[_Union[Crop, str]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("attributes", "suggested_name", "keywords", "hits", "applied_filters", "classifier_model", "embedder_model", "refine_terms", "reason")
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_NAME_FIELD_NUMBER: _ClassVar[int]
    KEYWORDS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FILTERS_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    REFINE_TERMS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    attributes: _containers.RepeatedCompositeFieldContainer[_common_pb2.AttributePrediction]
    suggested_name: str
    keywords: _containers.RepeatedScalarFieldContainer[str]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    applied_filters: _containers.RepeatedCompositeFieldContainer[FieldFilter]
    classifier_model: _common_pb2.ModelInfo
    embedder_model: _common_pb2.ModelInfo
    refine_terms: _containers.RepeatedCompositeFieldContainer[_common_pb2.QueryTerm]
    reason: str
    def __init__(self, attributes: _Optional[_Iterable[_Union[_common_pb2.AttributePrediction, _Mapping]]] = ..., suggested_name: _Optional[str] = ..., keywords: _Optional[_Iterable[str]] = ..., hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., applied_filters: _Optional[_Iterable[_Union[FieldFilter, _Mapping]]] = ..., classifier_model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., embedder_model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., refine_terms: _Optional[_Iterable[_Union[_common_pb2.QueryTerm, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class SearchOutfitRequest(_message.Message):
    __slots__ = ("image", "top_k", "refine_text")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    REFINE_TEXT_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    top_k: int
    refine_text: str
    def __init__(self, image: _Optional[bytes] = ..., top_k: _Optional[int] = ..., refine_text: _Optional[str] = ...) -> None: ...

class OutfitItem(_message.Message):
    __slots__ = ("box", "group", "score", "attributes", "suggested_name", "keywords", "hits", "applied_filters")
    BOX_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_NAME_FIELD_NUMBER: _ClassVar[int]
    KEYWORDS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FILTERS_FIELD_NUMBER: _ClassVar[int]
    box: _common_pb2.Box
    group: str
    score: float
    attributes: _containers.RepeatedCompositeFieldContainer[_common_pb2.AttributePrediction]
    suggested_name: str
    keywords: _containers.RepeatedScalarFieldContainer[str]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    applied_filters: _containers.RepeatedCompositeFieldContainer[FieldFilter]
    def __init__(self, box: _Optional[_Union[_common_pb2.Box, _Mapping]] = ..., group: _Optional[str] = ..., score: _Optional[float] = ..., attributes: _Optional[_Iterable[_Union[_common_pb2.AttributePrediction, _Mapping]]] = ..., suggested_name: _Optional[str] = ..., keywords: _Optional[_Iterable[str]] = ..., hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., applied_filters: _Optional[_Iterable[_Union[FieldFilter, _Mapping]]] = ...) -> None: ...

class SearchOutfitResponse(_message.Message):
    __slots__ = ("items", "image_width", "image_height", "detector_model", "classifier_model", "embedder_model", "refine_terms")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_MODEL_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    REFINE_TERMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[OutfitItem]
    image_width: int
    image_height: int
    detector_model: _common_pb2.ModelInfo
    classifier_model: _common_pb2.ModelInfo
    embedder_model: _common_pb2.ModelInfo
    refine_terms: _containers.RepeatedCompositeFieldContainer[_common_pb2.QueryTerm]
    def __init__(self, items: _Optional[_Iterable[_Union[OutfitItem, _Mapping]]] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., detector_model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., classifier_model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., embedder_model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., refine_terms: _Optional[_Iterable[_Union[_common_pb2.QueryTerm, _Mapping]]] = ...) -> None: ...

class SearchByIdRequest(_message.Message):
    __slots__ = ("id", "top_k", "filter_mode", "filters", "refine_text")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FILTER_MODE_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    REFINE_TEXT_FIELD_NUMBER: _ClassVar[int]
    id: int
    top_k: int
    filter_mode: FilterMode
    filters: _containers.RepeatedCompositeFieldContainer[FieldFilter]
    refine_text: str
    def __init__(self, id: _Optional[int] = ..., top_k: _Optional[int] = ..., filter_mode: _Optional[_Union[FilterMode, str]] = ..., filters: _Optional[_Iterable[_Union[FieldFilter, _Mapping]]] = ..., refine_text: _Optional[str] = ...) -> None: ...

class SearchByIdResponse(_message.Message):
    __slots__ = ("hits", "applied_filters", "refine_terms", "reason")
    HITS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FILTERS_FIELD_NUMBER: _ClassVar[int]
    REFINE_TERMS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    applied_filters: _containers.RepeatedCompositeFieldContainer[FieldFilter]
    refine_terms: _containers.RepeatedCompositeFieldContainer[_common_pb2.QueryTerm]
    reason: str
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., applied_filters: _Optional[_Iterable[_Union[FieldFilter, _Mapping]]] = ..., refine_terms: _Optional[_Iterable[_Union[_common_pb2.QueryTerm, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class SearchTextRequest(_message.Message):
    __slots__ = ("query", "top_k", "match", "filters")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    query: str
    top_k: int
    match: TextMatch
    filters: _containers.RepeatedCompositeFieldContainer[FieldFilter]
    def __init__(self, query: _Optional[str] = ..., top_k: _Optional[int] = ..., match: _Optional[_Union[TextMatch, str]] = ..., filters: _Optional[_Iterable[_Union[FieldFilter, _Mapping]]] = ...) -> None: ...

class SearchTextResponse(_message.Message):
    __slots__ = ("hits", "terms", "unknown_words", "applied_filters", "reason", "text_model", "embedder_model")
    HITS_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_WORDS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FILTERS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TEXT_MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_MODEL_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    terms: _containers.RepeatedCompositeFieldContainer[_common_pb2.QueryTerm]
    unknown_words: _containers.RepeatedScalarFieldContainer[str]
    applied_filters: _containers.RepeatedCompositeFieldContainer[FieldFilter]
    reason: str
    text_model: _common_pb2.ModelInfo
    embedder_model: _common_pb2.ModelInfo
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., terms: _Optional[_Iterable[_Union[_common_pb2.QueryTerm, _Mapping]]] = ..., unknown_words: _Optional[_Iterable[str]] = ..., applied_filters: _Optional[_Iterable[_Union[FieldFilter, _Mapping]]] = ..., reason: _Optional[str] = ..., text_model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., embedder_model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...

class CatalogueItem(_message.Message):
    __slots__ = ("id", "image", "payload", "content_hash")
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    id: int
    image: bytes
    payload: ItemPayload
    content_hash: str
    def __init__(self, id: _Optional[int] = ..., image: _Optional[bytes] = ..., payload: _Optional[_Union[ItemPayload, _Mapping]] = ..., content_hash: _Optional[str] = ...) -> None: ...

class UpsertItemsRequest(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: CatalogueItem
    def __init__(self, item: _Optional[_Union[CatalogueItem, _Mapping]] = ...) -> None: ...

class UpsertItemsResponse(_message.Message):
    __slots__ = ("id", "upserted", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: int
    upserted: bool
    error: _common_pb2.ItemError
    def __init__(self, id: _Optional[int] = ..., upserted: _Optional[bool] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ...) -> None: ...

class UpsertBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[CatalogueItem]
    def __init__(self, items: _Optional[_Iterable[_Union[CatalogueItem, _Mapping]]] = ...) -> None: ...

class UpsertBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[UpsertItemsResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[UpsertItemsResponse, _Mapping]]] = ...) -> None: ...

class DeleteItemsRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class DeleteItemsResponse(_message.Message):
    __slots__ = ("item_count",)
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    item_count: int
    def __init__(self, item_count: _Optional[int] = ...) -> None: ...

class GetItemRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class GetItemResponse(_message.Message):
    __slots__ = ("id", "payload", "content_hash")
    ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    id: int
    payload: ItemPayload
    content_hash: str
    def __init__(self, id: _Optional[int] = ..., payload: _Optional[_Union[ItemPayload, _Mapping]] = ..., content_hash: _Optional[str] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("item_count", "stored_embedder", "running_embedder", "classifier", "max_upsert_batch", "max_request_bytes")
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    STORED_EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    RUNNING_EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_FIELD_NUMBER: _ClassVar[int]
    MAX_UPSERT_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    item_count: int
    stored_embedder: _common_pb2.ModelInfo
    running_embedder: _common_pb2.ModelInfo
    classifier: _common_pb2.ModelInfo
    max_upsert_batch: int
    max_request_bytes: int
    def __init__(self, item_count: _Optional[int] = ..., stored_embedder: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., running_embedder: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., classifier: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., max_upsert_batch: _Optional[int] = ..., max_request_bytes: _Optional[int] = ...) -> None: ...

class ListItemsRequest(_message.Message):
    __slots__ = ("page_size",)
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    def __init__(self, page_size: _Optional[int] = ...) -> None: ...

class ItemDigest(_message.Message):
    __slots__ = ("id", "content_hash")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    id: int
    content_hash: str
    def __init__(self, id: _Optional[int] = ..., content_hash: _Optional[str] = ...) -> None: ...

class ListItemsResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ItemDigest]
    def __init__(self, items: _Optional[_Iterable[_Union[ItemDigest, _Mapping]]] = ...) -> None: ...
