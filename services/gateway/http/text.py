"""HTTP for searching by words: POST /v1/search/text, the refine_terms of photo searches, and their OpenAPI part.

    POST /v1/search/text {"query": "women blue kurtas", "top_k": 5, "match": "both", "filters": {...}}

Photo searches take the refinement words as `refine` (a form or query parameter of /v1/search and
/v1/items/{id}/similar, a JSON field of /v1/search/by-id).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from fashionsearch.errors import InvalidArgument
from fashionsearch.text_contract import MAX_QUERY_CHARS
from services.gateway.domain import QueryTerm, TextMatch, TextSearchOptions
from services.gateway.http.parsing import REFINE_PARAM, options_from_json, read_json
from services.gateway.http.responses import answer, filters_json, model_json

if TYPE_CHECKING:  # the handler's owner, which imports this module
    from services.gateway.http.handlers import HttpApi
    from services.gateway.service import GatewayService

TEXT_MATCHES = {match.value: match for match in TextMatch}
_TEXT_FIELDS = ("query", "top_k", "match", "filters")


def term_json(term: QueryTerm) -> dict[str, Any]:
    return {
        "field": term.field,
        "value": term.value,
        "words": term.words,
        "confidence": round(float(term.confidence), 4),
        "corrected": term.corrected,
    }


def terms_json(terms: Sequence[QueryTerm]) -> list[dict[str, Any]]:
    return [term_json(t) for t in terms]


def text_options(body: dict[str, Any]) -> tuple[str, TextSearchOptions]:
    """The query and options of a /v1/search/text body."""
    unknown = sorted(set(body) - set(_TEXT_FIELDS))
    if unknown:
        raise InvalidArgument(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_TEXT_FIELDS)}")
    query = body.get("query")
    if not isinstance(query, str):
        raise InvalidArgument('the body needs the "query" as a string, e.g. {"query": "black formal shoes men"}')
    match = body.get("match")
    if match is not None and match not in TEXT_MATCHES:
        raise InvalidArgument(f"unknown match {match!r}; allowed: {', '.join(TEXT_MATCHES)}")
    base = options_from_json({k: body[k] for k in ("top_k", "filters") if k in body})
    return query, TextSearchOptions(top_k=base.top_k, match=TEXT_MATCHES.get(match or ""), filters=base.filters)


def search_text_handler(service: GatewayService, api: HttpApi) -> Callable[[web.Request], Awaitable[web.Response]]:
    """POST /v1/search/text over the GatewayService."""

    async def search_text(request: web.Request) -> web.Response:
        query, options = text_options(await read_json(request))
        result = await service.search_text(query, options)
        return answer(
            request,
            {
                "hits": [api.hit_json(h) for h in result.hits],
                "terms": terms_json(result.terms),
                "unknown_words": list(result.unknown_words),
                "applied_filters": filters_json(result.applied_filters),
                "reason": result.reason,
                "text_model": model_json(result.text_model),
                "embedder_model": model_json(result.embedder_model),
            },
        )

    return search_text


# ---- OpenAPI ----------------------------------------------------------------------------------------------------


def openapi_schemas(settings_max_top_k: int) -> dict[str, Any]:
    string, number = {"type": "string"}, {"type": "number"}
    model = {"type": ["object", "null"], "properties": {"name": string, "version": string, "onnx_sha256": string}}
    return {
        "QueryTerm": {
            "type": "object",
            "description": "Words of the query that name an attribute value",
            "properties": {
                "field": string,
                "value": string,
                "words": string,
                "confidence": {**number, "description": "share of training names with these words that have it"},
                "corrected": {"type": "boolean", "description": "a word was read one letter away (jeens: jeans)"},
            },
        },
        "TextMatch": {
            "type": "string",
            "enum": list(TEXT_MATCHES),
            "description": "vector: the products nearest to the text's vector; both: products with the attribute "
            "values the words name, nearest first; filters: only the named values, unranked. Not given: the mode "
            "that measured best (reports/text-embedder)",
        },
        "SearchTextRequest": {
            "type": "object",
            "required": ["query"],
            "properties": {
                "query": {**string, "minLength": 1, "maxLength": MAX_QUERY_CHARS, "example": "women blue kurtas"},
                "top_k": {"type": "integer", "minimum": 1, "maximum": settings_max_top_k},
                "match": {"$ref": "#/components/schemas/TextMatch"},
                "filters": {"$ref": "#/components/schemas/Filters"},
            },
        },
        "SearchTextResponse": {
            "type": "object",
            "properties": {
                "hits": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}},
                "terms": {"type": "array", "items": {"$ref": "#/components/schemas/QueryTerm"}},
                "unknown_words": {"type": "array", "items": string},
                "applied_filters": {"$ref": "#/components/schemas/AppliedFilters"},
                "reason": {**string, "description": "why there are no hits, when there are none"},
                "text_model": model,
                "embedder_model": model,
            },
        },
    }


def openapi_paths(errors: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return {
        "/v1/search/text": {
            "post": {
                "summary": "Search by words, in the photos' vector space; words naming a colour, gender, article "
                "type, usage or season can become filters",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SearchTextRequest"}}},
                },
                "responses": {
                    "200": {
                        "description": "Matching products; no hits and a reason when no word is known",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/SearchTextResponse"}}
                        },
                    },
                    **errors(400, 409, 503, 504),
                },
            }
        }
    }


REFINE_PARAMETER = {
    "name": REFINE_PARAM,
    "in": "query",
    "description": "Words that refine the search, e.g. 'in red' or 'for women': the vector moves towards the "
    "words' vector and the values they name become filters (a multipart field of /v1/search works too)",
    "schema": {"type": "string", "maxLength": MAX_QUERY_CHARS},
}
