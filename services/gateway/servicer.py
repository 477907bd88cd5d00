"""gRPC <-> domain mapping for the Gateway service; the use cases live in service.py."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc.aio

from fashionsearch.catalogue import CONTENT_HASH_KEY, payload_from_proto, payload_to_proto
from fashionsearch.classification import AttributePrediction
from fashionsearch.errors import InvalidArgument, item_error_fields, rpc_errors
from fashionsearch.store import Hit
from fashionsearch.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from services.gateway.domain import (
    DEFAULT_CROP,
    CatalogueItem,
    Crop,
    FilterMode,
    ModelId,
    QueryTerm,
    SearchOptions,
    TextMatch,
    TextSearchOptions,
    UpsertOutcome,
)
from services.gateway.service import GatewayService

logger = logging.getLogger(__name__)

_MODES = {
    gateway_pb2.FILTER_MODE_UNSPECIFIED: FilterMode.PREDICTED_SUBCATEGORY,
    gateway_pb2.FILTER_MODE_PREDICTED_SUBCATEGORY: FilterMode.PREDICTED_SUBCATEGORY,
    gateway_pb2.FILTER_MODE_NONE: FilterMode.NONE,
    gateway_pb2.FILTER_MODE_EXPLICIT: FilterMode.EXPLICIT,
}

_CROPS = {
    gateway_pb2.CROP_UNSPECIFIED: DEFAULT_CROP,
    gateway_pb2.CROP_NONE: Crop.NONE,
    gateway_pb2.CROP_AUTO: Crop.AUTO,
}

_TEXT_MATCHES = {
    gateway_pb2.TEXT_MATCH_UNSPECIFIED: None,
    gateway_pb2.TEXT_MATCH_VECTOR: TextMatch.VECTOR,
    gateway_pb2.TEXT_MATCH_FILTERS: TextMatch.FILTERS,
    gateway_pb2.TEXT_MATCH_BOTH: TextMatch.BOTH,
}

_DEFAULT_LIST_PAGE = 1000
_MAX_LIST_PAGE = 10000


def search_options(request: Any) -> SearchOptions:
    """SearchOptions from a SearchRequest or SearchByIdRequest."""
    mode = _MODES.get(request.filter_mode)
    if mode is None:
        raise InvalidArgument(f"unknown filter_mode {request.filter_mode}")
    return SearchOptions(
        top_k=request.top_k if request.HasField("top_k") else None,
        mode=mode,
        filters=tuple((f.field, tuple(f.values)) for f in request.filters),
        refine_text=request.refine_text,
    )


def photo_search_options(request: gateway_pb2.SearchRequest) -> SearchOptions:
    crop = _CROPS.get(request.crop)
    if crop is None:
        raise InvalidArgument(f"unknown crop {request.crop}")
    return dataclasses.replace(search_options(request), crop=crop)


def text_search_options(request: gateway_pb2.SearchTextRequest) -> TextSearchOptions:
    if request.match not in _TEXT_MATCHES:
        raise InvalidArgument(f"unknown match {request.match}")
    match = _TEXT_MATCHES[request.match]
    return TextSearchOptions(
        top_k=request.top_k if request.HasField("top_k") else None,
        match=match,
        filters=tuple((f.field, tuple(f.values)) for f in request.filters),
    )


def terms_to_proto(terms: Sequence[QueryTerm]) -> list[common_pb2.QueryTerm]:
    return [
        common_pb2.QueryTerm(
            field=t.field, value=t.value, words=t.words, confidence=t.confidence, corrected=t.corrected
        )
        for t in terms
    ]


def item_from_proto(message: gateway_pb2.CatalogueItem) -> CatalogueItem:
    return CatalogueItem(
        id=message.id,
        image=message.image,
        payload=payload_from_proto(message.payload),
        content_hash=message.content_hash,
    )


def outcome_to_proto(outcome: UpsertOutcome) -> gateway_pb2.UpsertItemsResponse:
    if outcome.error is None:
        return gateway_pb2.UpsertItemsResponse(id=outcome.id, upserted=True)
    return gateway_pb2.UpsertItemsResponse(
        id=outcome.id, upserted=False, error=common_pb2.ItemError(**item_error_fields(outcome.error))
    )


def model_to_proto(model: ModelId | None) -> common_pb2.ModelInfo | None:
    if model is None:
        return None
    return common_pb2.ModelInfo(name=model.name, version=model.version, onnx_sha256=model.onnx_sha256)


def hit_to_proto(hit: Hit) -> gateway_pb2.SearchHit:
    return gateway_pb2.SearchHit(id=hit.id, distance=hit.distance, payload=payload_to_proto(hit.payload))


def filters_to_proto(filters: Mapping[str, tuple[str, ...]]) -> list[gateway_pb2.FieldFilter]:
    return [gateway_pb2.FieldFilter(field=name, values=list(values)) for name, values in filters.items()]


def attribute_to_proto(attribute: AttributePrediction) -> common_pb2.AttributePrediction:
    return common_pb2.AttributePrediction(
        attribute=attribute.attribute,
        labels=[common_pb2.LabelScore(label=s.label, probability=s.probability) for s in attribute.labels],
    )


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    """Maps each RPC onto GatewayService and each FashionSearchError onto its status code."""

    def __init__(self, service: GatewayService) -> None:
        self._service = service

    @rpc_errors
    async def Search(
        self, request: gateway_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SearchResponse:
        result = await self._service.search(request.image, photo_search_options(request))
        return gateway_pb2.SearchResponse(
            attributes=[attribute_to_proto(a) for a in result.classification.attributes],
            suggested_name=result.suggested_name,
            keywords=list(result.keywords),
            hits=[hit_to_proto(h) for h in result.hits],
            applied_filters=filters_to_proto(result.applied_filters),
            classifier_model=model_to_proto(result.classification.model),
            embedder_model=model_to_proto(result.embedder_model),
            refine_terms=terms_to_proto(result.refine_terms),
            reason=result.reason,
        )

    @rpc_errors
    async def SearchOutfit(
        self, request: gateway_pb2.SearchOutfitRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SearchOutfitResponse:
        options = SearchOptions(
            top_k=request.top_k if request.HasField("top_k") else None, refine_text=request.refine_text
        )
        result = await self._service.search_outfit(request.image, options)
        return gateway_pb2.SearchOutfitResponse(
            items=[
                gateway_pb2.OutfitItem(
                    box=common_pb2.Box(
                        left=item.detection.left,
                        top=item.detection.top,
                        width=item.detection.width,
                        height=item.detection.height,
                    ),
                    group=item.detection.group,
                    score=item.detection.score,
                    attributes=[attribute_to_proto(a) for a in item.classification.attributes],
                    suggested_name=item.classification.suggested_name,
                    keywords=list(item.keywords),
                    hits=[hit_to_proto(h) for h in item.hits],
                    applied_filters=filters_to_proto(item.applied_filters),
                )
                for item in result.items
            ],
            image_width=result.size[0],
            image_height=result.size[1],
            detector_model=model_to_proto(result.detector_model),
            classifier_model=model_to_proto(result.items[0].classification.model) if result.items else None,
            embedder_model=model_to_proto(result.embedder_model),
            refine_terms=terms_to_proto(result.refine_terms),
        )

    @rpc_errors
    async def SearchById(
        self, request: gateway_pb2.SearchByIdRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SearchByIdResponse:
        result = await self._service.search_by_id(request.id, search_options(request))
        return gateway_pb2.SearchByIdResponse(
            hits=[hit_to_proto(h) for h in result.hits],
            applied_filters=filters_to_proto(result.applied_filters),
            refine_terms=terms_to_proto(result.refine_terms),
            reason=result.reason,
        )

    @rpc_errors
    async def SearchText(
        self, request: gateway_pb2.SearchTextRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SearchTextResponse:
        result = await self._service.search_text(request.query, text_search_options(request))
        return gateway_pb2.SearchTextResponse(
            hits=[hit_to_proto(h) for h in result.hits],
            terms=terms_to_proto(result.terms),
            unknown_words=list(result.unknown_words),
            applied_filters=filters_to_proto(result.applied_filters),
            reason=result.reason,
            text_model=model_to_proto(result.text_model),
            embedder_model=model_to_proto(result.embedder_model),
        )

    @rpc_errors
    async def UpsertItems(
        self, request_iterator: AsyncIterator[gateway_pb2.UpsertItemsRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.UpsertItemsResponse]:
        async def items() -> AsyncIterator[CatalogueItem]:
            async for message in request_iterator:
                yield item_from_proto(message.item)

        async for outcome in self._service.upsert(items()):
            yield outcome_to_proto(outcome)

    @rpc_errors
    async def UpsertBatch(
        self, request: gateway_pb2.UpsertBatchRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.UpsertBatchResponse:
        outcomes = await self._service.upsert_batch([item_from_proto(item) for item in request.items])
        return gateway_pb2.UpsertBatchResponse(results=[outcome_to_proto(outcome) for outcome in outcomes])

    @rpc_errors
    async def DeleteItems(
        self, request: gateway_pb2.DeleteItemsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DeleteItemsResponse:
        count = await self._service.delete(list(request.ids))
        return gateway_pb2.DeleteItemsResponse(item_count=count)

    @rpc_errors
    async def GetItem(
        self, request: gateway_pb2.GetItemRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetItemResponse:
        item = await self._service.get(request.id)
        return gateway_pb2.GetItemResponse(
            id=item.id,
            payload=payload_to_proto(item.payload),
            content_hash=str(item.payload.get(CONTENT_HASH_KEY, "")),
        )

    @rpc_errors
    async def ListItems(
        self, request: gateway_pb2.ListItemsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.ListItemsResponse]:
        if request.page_size > _MAX_LIST_PAGE:
            raise InvalidArgument(f"page_size must be at most {_MAX_LIST_PAGE}, got {request.page_size}")
        async for page in self._service.list_digests(request.page_size or _DEFAULT_LIST_PAGE):
            yield gateway_pb2.ListItemsResponse(items=[gateway_pb2.ItemDigest(id=i, content_hash=h) for i, h in page])

    @rpc_errors
    async def GetStats(
        self, request: gateway_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetStatsResponse:
        stats = await self._service.stats()
        stored = stats.stored_embedder
        return gateway_pb2.GetStatsResponse(
            item_count=stats.item_count,
            stored_embedder=common_pb2.ModelInfo(name=stored.model, version=stored.version) if stored else None,
            running_embedder=model_to_proto(stats.running_embedder),
            classifier=model_to_proto(stats.classifier),
            max_upsert_batch=stats.max_upsert_batch,
            max_request_bytes=stats.max_request_bytes,
        )
