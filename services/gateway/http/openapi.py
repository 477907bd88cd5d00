"""The OpenAPI document of the HTTP API, served at /openapi.json; a test checks that it lists exactly the routes of
app.py."""

from __future__ import annotations

from typing import Any

from fashionsearch.catalogue import PROTO_PAYLOAD_FIELDS
from fashionsearch.store import FILTER_FIELDS
from fashionsearch.text_contract import MAX_QUERY_CHARS
from services.gateway.domain import DEFAULT_CROP
from services.gateway.http.parsing import (
    CROP_PARAM,
    CROPS,
    DEFAULT_LIST_CHUNK,
    FILTER_MODES,
    REFINE_PARAM,
    TEXT_MATCHES,
)
from services.gateway.http.responses import JSON_0_1, JSON_VERSION_HEADER
from services.gateway.security import API_KEY_HEADER
from services.gateway.settings import Settings


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Invalid argument: undecodable, empty or oversized image, bad top_k, unknown filter field",
        404: "Unknown product id",
        409: "Failed precondition: the stored vectors come from another embedder version; re-index",
        413: "Request body over the limit (derived from GATEWAY_MAX_IMAGE_BYTES; GATEWAY_HTTP_MAX_BODY_BYTES)",
        401: "No API key, or an unknown one (see GATEWAY_READ_API_KEYS, GATEWAY_WRITE_API_KEYS)",
        403: "The key allows searches only, or catalogue writes are turned off",
        415: "Unsupported content type",
        503: "A dependency (classifier, embedder, vector store) is unavailable, or the gateway is at its limit of"
        " requests in flight (then with Retry-After)",
        504: "A dependency did not answer within its deadline",
    }
    return {str(s): _json(_ref("Error"), reasons[s]) for s in statuses}


# Searching by words: POST /v1/search/text and the refine parameter of photo searches.

REFINE_REASON = {
    "type": "string",
    "description": "why refine words were set aside for an explicit filter on their field (the filter wins, as in"
    " /v1/search/text), or why words and filters left no product; empty otherwise",
}
REFINE_PARAMETER = {
    "name": REFINE_PARAM,
    "in": "query",
    "description": "Words that refine the search, e.g. 'in red' or 'for women': the vector moves towards the "
    "words' vector and the values they name become filters, except on a field an explicit filter sets (the filter"
    " wins; the answer's reason says so); a multipart field of /v1/search works too",
    "schema": {"type": "string", "maxLength": MAX_QUERY_CHARS},
}


def _text_schemas(settings_max_top_k: int) -> dict[str, Any]:
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


def _text_paths() -> dict[str, Any]:
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
                    **_errors(400, 409, 503, 504),
                },
            }
        }
    }


def _outfit_schemas() -> dict[str, Any]:
    integer = {"type": "integer", "minimum": 0}
    return {
        "Box": {
            "type": "object",
            "description": "Whole pixels of the uploaded photo (after its EXIF orientation), origin at the top left",
            "required": ["left", "top", "width", "height"],
            "properties": {"left": integer, "top": integer, "width": integer, "height": integer},
        },
        "OutfitItem": {
            "type": "object",
            "description": "One product found in the photo: where, what it was read as, the products most like it",
            "required": ["box", "group", "score", "attributes", "suggested_name", "keywords", "hits"],
            "additionalProperties": False,
            "properties": {
                "box": {"$ref": "#/components/schemas/Box"},
                "group": {"type": "string", "description": "the detector's coarse group, e.g. top, footwear"},
                "score": {"type": "number", "minimum": 0, "maximum": 1, "description": "the detector's confidence"},
                "attributes": {"type": "array", "items": {"$ref": "#/components/schemas/AttributePrediction"}},
                "suggested_name": {"type": "string"},
                "keywords": {"type": "array", "items": {"type": "string"}},
                "hits": {
                    "type": "array",
                    "description": "nearest first, within the product's predicted subCategory",
                    "items": {"$ref": "#/components/schemas/Hit"},
                },
            },
        },
        "SearchOutfitResponse": {
            "type": "object",
            "required": ["items"],
            "additionalProperties": False,
            "properties": {
                "items": {
                    "type": "array",
                    "description": "the detector's most confident first; empty when the photo shows no product",
                    "items": {"$ref": "#/components/schemas/OutfitItem"},
                }
            },
        },
    }


CROP_PARAMETER = {
    "name": CROP_PARAM,
    "in": "query",
    "description": "auto (default): read the main product the detector finds, cut out (one covering 15% of the photo "
    "or more, or with another product scored at least half as high, is read cut out and whole, the two readings "
    "averaged; the whole photo alone when it is a packshot on "
    "the catalogue's white, the product fills half of it, the detector finds none, or the gateway has no detector or "
    "it is down); none: read the whole photo. A multipart field works too.",
    "schema": {"type": "string", "enum": list(CROPS), "default": DEFAULT_CROP.value},
}


def _outfit_paths(top_k: dict[str, Any], image_body: dict[str, Any]) -> dict[str, Any]:
    return {
        "/v1/search/outfit": {
            "post": {
                "summary": "Every product in a photo (an outfit, a flat lay): its box, and each searched within its "
                "predicted subCategory",
                "parameters": [top_k, REFINE_PARAMETER],
                "requestBody": {"required": True, "content": image_body},
                "responses": {
                    "200": {
                        "description": "One item per product found; no items (not an error) when there is none",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/SearchOutfitResponse"}}
                        },
                    },
                    **_errors(400, 409, 413, 415, 503, 504),
                },
            }
        }
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the HTTP API."""
    string = {"type": "string"}
    integer = {"type": "integer"}
    id_param = {"name": "id", "in": "path", "required": True, "schema": {**integer, "minimum": 1}}
    search_params = [
        {
            "name": "top_k",
            "in": "query",
            "schema": {**integer, "minimum": 1, "maximum": settings.max_top_k, "default": settings.default_top_k},
        },
        {"name": "filter_mode", "in": "query", "schema": _ref("FilterMode")},
        {
            "name": "filter.{field}",
            "in": "query",
            "description": "Explicit filter, repeatable: filter.subCategory=Topwear&filter.baseColour=Black. "
            f"Fields: {', '.join(FILTER_FIELDS)}. Giving one implies filter_mode=explicit.",
            "schema": string,
        },
        REFINE_PARAMETER,
    ]
    model = {
        "type": ["object", "null"],
        "properties": {"name": string, "version": string, "onnx_sha256": string},
    }
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": _ref("ErrorDetail")}},
        "ErrorDetail": {
            "type": "object",
            "required": ["status", "code", "message"],
            "properties": {
                "status": integer,
                "code": {**string, "description": "gRPC status name, e.g. INVALID_ARGUMENT"},
                "message": string,
            },
        },
        "FilterMode": {
            "type": "string",
            "enum": list(FILTER_MODES),
            "description": "predicted_subcategory (default): the predicted subCategory, with the next most probable"
            " ones while the classifier is unsure (GATEWAY_PREDICTED_SUBCATEGORY_MASS; for by-id, the item's);"
            " none: the whole catalogue; explicit: the filter.<field> parameters.",
        },
        "Payload": {
            "type": "object",
            "description": "ItemPayload's field names. Version 0.1's names (the catalogue's columns: masterCategory,"
            " subCategory, articleType, baseColour) are still read in requests, for one version (deprecated).",
            "properties": {k: (integer if k == "year" else string) for k in PROTO_PAYLOAD_FIELDS},
        },
        "Hit": {
            "type": "object",
            "properties": {
                "id": integer,
                "distance": {"type": "number", "description": "Euclidean distance between embeddings"},
                "payload": _ref("Payload"),
                "image_url": {"type": ["string", "null"]},
            },
        },
        "Filters": {
            "type": "object",
            "description": f"Field name ({', '.join(FILTER_FIELDS)}) -> accepted values (a string or a list)",
            "additionalProperties": {"oneOf": [string, {"type": "array", "items": string}]},
        },
        "FieldFilter": {
            "type": "object",
            "description": "A filter on one field, as gRPC's FieldFilter: the product has one of the values",
            "properties": {
                "field": {**string, "enum": list(FILTER_FIELDS)},
                "values": {"type": "array", "items": string},
            },
        },
        "AppliedFilters": {
            "type": "array",
            "description": f"The filters the search applied (an object field -> values with {JSON_VERSION_HEADER}:"
            f" {JSON_0_1}, as version 0.1 wrote it)",
            "items": _ref("FieldFilter"),
        },
        "AttributePrediction": {
            "type": "object",
            "properties": {
                "attribute": string,
                "labels": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"label": string, "probability": {"type": "number"}}},
                },
            },
        },
        "SearchResponse": {
            "type": "object",
            "properties": {
                "attributes": {"type": "array", "items": _ref("AttributePrediction")},
                "suggested_name": string,
                "keywords": {"type": "array", "items": string},
                "hits": {"type": "array", "items": _ref("Hit")},
                "applied_filters": _ref("AppliedFilters"),
                "classifier_model": model,
                "embedder_model": model,
                "refine_terms": {"type": "array", "items": _ref("QueryTerm")},
                "reason": REFINE_REASON,
            },
        },
        "SimilarResponse": {
            "type": "object",
            "properties": {
                "hits": {"type": "array", "items": _ref("Hit")},
                "applied_filters": _ref("AppliedFilters"),
                "refine_terms": {"type": "array", "items": _ref("QueryTerm")},
                "reason": REFINE_REASON,
            },
        },
        "SearchByIdRequest": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": integer,
                "top_k": integer,
                "filter_mode": _ref("FilterMode"),
                "filters": _ref("Filters"),
                "refine": {**string, "description": "words that refine the search, e.g. 'in red'"},
            },
        },
        "Item": {
            "type": "object",
            "properties": {
                "id": integer,
                "payload": _ref("Payload"),
                "content_hash": string,
                "image_url": {"type": ["string", "null"]},
            },
        },
        "UpsertResult": {
            "type": "object",
            "properties": {
                "id": integer,
                "upserted": {"type": "boolean"},
                "error": {"oneOf": [{"type": "null"}, _ref("ErrorDetail")]},
            },
        },
        "ItemCount": {"type": "object", "properties": {"item_count": integer}},
        "Stats": {
            "type": "object",
            "properties": {
                "item_count": integer,
                "stored_embedder": model,
                "running_embedder": model,
                "classifier": model,
            },
        },
        "Health": {"type": "object", "properties": {"status": string}},
        **_text_schemas(settings.max_top_k),
        **_outfit_schemas(),
    }
    image_body = {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {"image": {"type": "string", "format": "binary"}},
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }
    paths: dict[str, Any] = {
        "/v1/search": {
            "post": {
                "summary": "Search by photo: predicted attributes, suggested name and keywords, similar products",
                "parameters": [*search_params, CROP_PARAMETER],
                "requestBody": {"required": True, "content": image_body},
                "responses": {
                    "200": _json(_ref("SearchResponse"), "Search result"),
                    **_errors(400, 409, 413, 415, 503, 504),
                },
            }
        },
        "/v1/search/by-id": {
            "post": {
                "summary": "More like this: products similar to a catalogue product (the product itself excluded)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("SearchByIdRequest")}},
                },
                "responses": {"200": _json(_ref("SimilarResponse"), "Similar products"), **_errors(400, 404, 503, 504)},
            }
        },
        "/v1/items/{id}/similar": {
            "get": {
                "summary": "More like this (query-string form of /v1/search/by-id)",
                "parameters": [id_param, *search_params],
                "responses": {"200": _json(_ref("SimilarResponse"), "Similar products"), **_errors(400, 404, 503, 504)},
            }
        },
        "/v1/items": {
            "get": {
                "summary": "Every item's id and content hash, one JSON object per line",
                "parameters": [
                    {
                        "name": "chunk_size",
                        "in": "query",
                        "description": "Lines read and written at a time (every item is listed whatever its value)",
                        "schema": {**integer, "minimum": 1, "maximum": 10000, "default": DEFAULT_LIST_CHUNK},
                    },
                    {
                        "name": "page_size",
                        "in": "query",
                        "description": "chunk_size's name until version 0.1",
                        "deprecated": True,
                        "schema": {**integer, "minimum": 1, "maximum": 10000},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "NDJSON lines {id, content_hash}",
                        "content": {"application/x-ndjson": {"schema": string}},
                    },
                    **_errors(400, 503, 504),
                },
            },
            "post": {
                "summary": "Upsert a batch of items; one result per item, in order",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["items"],
                                "properties": {
                                    "items": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["id", "image_base64"],
                                            "properties": {
                                                "id": integer,
                                                "image_base64": string,
                                                "payload": _ref("Payload"),
                                                "content_hash": string,
                                            },
                                        },
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"results": {"type": "array", "items": _ref("UpsertResult")}}},
                        "Per-item results",
                    ),
                    **_errors(400, 413),
                },
            },
        },
        "/v1/items/delete": {
            "post": {
                "summary": "Delete items by id (unknown ids are ignored)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "properties": {"ids": {"type": "array", "items": integer}}}
                        }
                    },
                },
                "responses": {"200": _json(_ref("ItemCount"), "Items left"), **_errors(400, 503, 504)},
            }
        },
        "/v1/items/{id}": {
            "get": {
                "summary": "One catalogue item",
                "parameters": [id_param],
                "responses": {"200": _json(_ref("Item"), "The item"), **_errors(400, 404, 503, 504)},
            },
            "put": {
                "summary": "Upsert one item: its photo and payload",
                "parameters": [id_param],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["image"],
                                "properties": {
                                    "image": {"type": "string", "format": "binary"},
                                    "payload": {"type": "string", "description": "JSON object of Payload fields"},
                                    "content_hash": string,
                                },
                            }
                        }
                    },
                },
                "responses": {"200": _json(_ref("UpsertResult"), "Stored"), **_errors(400, 409, 413, 415, 503, 504)},
            },
            "delete": {
                "summary": "Delete one item (an unknown id is not an error)",
                "parameters": [id_param],
                "responses": {"200": _json(_ref("ItemCount"), "Items left"), **_errors(400, 503, 504)},
            },
        },
        "/v1/items/{id}/image": {
            "get": {
                "summary": "Redirect to the item's image: a GATEWAY_IMAGE_ROOT file or a URL on a"
                " GATEWAY_IMAGE_URL_HOSTS host",
                "parameters": [id_param],
                "responses": {"302": {"description": "Location of the image"}, **_errors(400, 404)},
            }
        },
        "/v1/stats": {
            "get": {
                "summary": "Item count and the models in use",
                "responses": {"200": _json(_ref("Stats"), "Statistics"), **_errors(503, 504)},
            }
        },
        "/v1/admin/backup": {
            "post": {
                "summary": "Back up the catalogue into GATEWAY_BACKUP_DIR while it serves (python -m jobs.backup)",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "backup": string,
                                "points": integer,
                                "seconds": {"type": "number"},
                                "embedder": string,
                            },
                        },
                        "The backup written",
                    ),
                    **_errors(401, 403, 409, 503),
                },
            }
        },
        "/v1/admin/compact": {
            "post": {
                "summary": "Rebuild the embedded store's graph over the gateway's own writes, in the background",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "previous": string,
                                "collection": string,
                                "points": integer,
                                "replayed_writes": integer,
                                "seconds": {"type": "number"},
                            },
                        },
                        "The collection now served",
                    ),
                    **_errors(401, 403, 409, 503),
                },
            }
        },
        "/v1/categories": {
            "get": {
                "summary": "The subCategory values in the catalogue, most frequent first",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "field": string,
                                "values": {
                                    "type": "array",
                                    "items": {"type": "object", "properties": {"value": string, "count": integer}},
                                },
                            },
                        },
                        "Values and counts",
                    ),
                    **_errors(503, 504),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "The gateway's gRPC health status",
                "parameters": [{"name": "service", "in": "query", "schema": string}],
                "responses": {
                    "200": _json(_ref("Health"), "SERVING"),
                    "503": _json(_ref("Health"), "NOT_SERVING or SERVICE_UNKNOWN"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "The OpenAPI document", "content": {"application/json": {}}}},
            }
        },
        "/catalogue/{path}": {
            "get": {
                "summary": "A product image under GATEWAY_IMAGE_ROOT (what a hit's image_url points to)",
                "parameters": [{"name": "path", "in": "path", "required": True, "schema": string}],
                "responses": {"200": {"description": "The image file"}, **_errors(404)},
            }
        },
        "/images/{path}": {
            "get": {
                "summary": "The same as /catalogue/{path}: the prefix of version 0.1, answered for one more version",
                "deprecated": True,
                "parameters": [{"name": "path", "in": "path", "required": True, "schema": string}],
                "responses": {"200": {"description": "The image file"}, **_errors(404)},
            }
        },
    }
    if settings.metrics_on_http_port:
        paths["/metrics"] = {
            "get": {
                "summary": "Prometheus metrics (no API key; on GATEWAY_METRICS_PORT instead when that is set apart)",
                "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}},
            }
        }
    paths.update(_text_paths())
    paths.update(_outfit_paths(search_params[0], image_body))
    # The answers that hold payloads or applied filters can still be asked for in version 0.1's shape.
    json_version = {
        "name": JSON_VERSION_HEADER,
        "in": "header",
        "deprecated": True,
        "description": f"{JSON_0_1}: the answer in version 0.1's shape (payload keys masterCategory, subCategory,"
        " ...; applied_filters an object field -> values), for one more version",
        "schema": {**string, "enum": [JSON_0_1]},
    }
    for path, method in (
        ("/v1/search", "post"),
        ("/v1/search/by-id", "post"),
        ("/v1/search/text", "post"),
        ("/v1/items/{id}/similar", "get"),
        ("/v1/items/{id}", "get"),
    ):
        paths[path][method].setdefault("parameters", []).append(json_version)
    # /v1 needs a key as services/gateway/security.py decides: writes always, reads when read keys are set.
    for path, operations in paths.items():
        if path.startswith("/v1/"):
            for operation in operations.values():
                operation["security"] = [{"bearer": []}, {"apiKey": []}, {}]
                operation["responses"].update(_errors(401, 403))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fashionsearch gateway HTTP API",
            "version": "1",
            "description": "JSON mirror of the fashionsearch.v1.Gateway gRPC service. Every JSON key is snake_case,"
            " the gRPC messages' field names (payload keys are ItemPayload's: sub_category, base_colour), and"
            " applied_filters is a list of {field, values} as over gRPC; a catalogue attribute named as a value (a"
            " filter's field, filter.<field>, the keys of filters, an attribute's name) is its catalogue column name,"
            " e.g. subCategory, as in gRPC's FieldFilter. Version 0.1 wrote payload keys as column names and"
            " applied_filters as an object: requests may still use those payload keys, and"
            f" {JSON_VERSION_HEADER}: {JSON_0_1} gets that shape back, for one version (deprecated). Errors carry"
            " the gRPC code name and a message: 400 INVALID_ARGUMENT, 404 NOT_FOUND, 409 FAILED_PRECONDITION,"
            " 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key as a bearer token"},
                "apiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
            },
        },
    }
