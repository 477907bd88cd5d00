"""The gateway's HTTP/JSON API and web page, served by aiohttp on the same event loop as the gRPC server.

app.py (routes, error handling, the server), handlers.py (one method per endpoint), parsing.py (requests in),
responses.py (JSON out, image links), openapi.py (the document at /openapi.json, checked against the routes).

Every endpoint calls the same GatewayService as the gRPC servicer, so validation and errors are the same; a
FashionSearchError becomes its HTTP status (fashionsearch/errors.py) with a JSON body
``{"error": {"status": 400, "code": "INVALID_ARGUMENT", "message": "..."}}``.

JSON names: every key is snake_case, the gRPC messages' field names (a payload's keys are ItemPayload's:
``sub_category``, ``base_colour``), and ``applied_filters`` is a list of ``{"field", "values"}`` as over gRPC. A
catalogue attribute named as a value (a filter's field, ``filter.<field>``, the keys of a ``filters`` object, an
attribute's name) is its catalogue column name, ``subCategory``, as in gRPC's FieldFilter. Version 0.1 wrote payload
keys as column names and ``applied_filters`` as an object; for one version, requests may still use those payload
keys, and a request with ``X-Fashionsearch-Json-Version: 0.1`` gets its answer in that shape (deprecated).

Product images: a payload's ``image_ref`` is either an http(s) URL (handed to browsers only when its host is in
GATEWAY_IMAGE_URL_HOSTS) or a path relative to GATEWAY_IMAGE_ROOT (the catalogue folder the indexer read, e.g.
sample_catalogue/), served under ``/catalogue/``. The gateway stores no image bytes itself.

Request bodies larger than the body limit (Settings.http_body_limit: what one image of GATEWAY_MAX_IMAGE_BYTES
needs in the largest form a request can carry it; GATEWAY_HTTP_MAX_BODY_BYTES can lower it) are refused with 413:
from Content-Length before any of the body is read (also answering ``Expect: 100-continue`` that way), otherwise
while it streams in. Requests beyond the gateway's cap on work in flight, shared with gRPC, are answered 503 with
Retry-After before their body is read; a body holds the cap only for the bytes that arrived, and one that stops
arriving, or comes slower than GATEWAY_HTTP_BODY_MIN_RATE_BPS on the whole, is answered 408
(services/gateway/admission.py).
"""
