"""Where the job writes: through the gateway, or straight into a store with the model services.

``GatewayTarget``: the default with the embedded Qdrant Edge store, which has a single writer (the gateway). The
gateway embeds, classifies missing attributes and upserts; the job sends items in UpsertBatch calls with
their content hash and reads the stored hashes with ListItems.

``DirectTarget``: the job calls the embedder (and the classifier, for missing attributes) with batch RPCs and
writes the store itself: a Qdrant server through qdrant-client, or a *new* Edge collection that no other process
has open (the rebuild after a model upgrade).  It handles the collection life cycle:

- the alias (e.g. ``catalogue``) resolves to a live collection holding vectors of the running embedder: items are
  updated in place, incrementally;
- otherwise (first run, or the embedder changed): a collection named after the alias and the embedder
  (``catalogue--<model>-<version>``) is built beside the live one, and the alias is switched to it atomically
  once the run completes; the old collection is dropped unless asked to keep it.  A killed rebuild resumes into
  the same collection because its name depends only on the alias and the embedder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc
import numpy as np

from fashionsearch.batching import REQUEST_SLACK_BYTES, bounded_chunks
from fashionsearch.catalogue import (
    CONTENT_HASH_KEY,
    check_item,
    missing_attributes,
    payload_to_proto,
    predicted_attributes,
    stored_payload,
)
from fashionsearch.channels import channel_options, probe_image
from fashionsearch.store import CollectionCatalog, VectorIndex
from fashionsearch.store.base import EmbedderIdentity, StoredPoint, versioned_name
from fashionsearch.store.lock import StoreLockedError
from fashionsearch.v1 import (
    classifier_pb2,
    classifier_pb2_grpc,
    embedder_pb2,
    embedder_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
)
from jobs.indexer.manifest import Row

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)


class JobError(Exception):
    """The run cannot go on (a service down after retries, a store in the wrong state); the message says why."""


@dataclass(frozen=True)
class WriteItem:
    """An item whose content changed (or is new): what the target needs to embed and store it."""

    row: Row
    image: bytes
    content_hash: str


@dataclass
class StageTimes:
    """Seconds spent per stage, summed over batches (concurrent batches overlap, so the sum can exceed wall time)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


class Target(Protocol):
    """What the runner needs from a destination."""

    times: StageTimes

    def prepare(self) -> str:
        """Connect, learn the embedder identity, pick the collection; returns the identity ("model@version")."""
        ...

    def describe(self) -> str: ...

    def digests(self) -> Iterator[tuple[int, str]]:
        """(id, content hash) of every stored item; hash "" when the item has none."""
        ...

    def write(self, items: Sequence[WriteItem]) -> list[str | None]:
        """Embed and store the items; per item None when stored, else the reason it was refused."""
        ...

    def delete(self, ids: Sequence[int]) -> int:
        """Remove items; returns how many existed."""
        ...

    def finish(self, *, complete: bool) -> list[str]:
        """Called once after the run (complete: every row was handled); returns notes for the summary."""
        ...

    def close(self) -> None: ...


#: Bytes per EmbedBatch / ClassifyBatch request: half the model services' default message limit (64 MB), since
#: shop photos fetched from URLs can be megabytes each and 64 of them would not fit in one message.
MAX_MODEL_REQUEST_BYTES = 32 * 1024 * 1024


def _channel(addr: str, tls_ca: bytes | None = None) -> grpc.Channel:
    options = channel_options(_MAX_MESSAGE_BYTES)
    if tls_ca is not None:
        return grpc.secure_channel(addr, grpc.ssl_channel_credentials(root_certificates=tls_ca), options=options)
    return grpc.insecure_channel(addr, options=options)


def _call_with_retries(what: str, fn: Any, *, attempts: int = 5) -> Any:
    """Call fn(); retry UNAVAILABLE / DEADLINE_EXCEEDED with backoff (a service restarting), then give up."""
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code not in _RETRYABLE or attempt == attempts:
                details = exc.details() if hasattr(exc, "details") else str(exc)
                raise JobError(f"{what} failed: {code.name if code else 'UNKNOWN'}: {details}") from exc
            logger.warning("%s: %s, retrying in %.1f s (attempt %d/%d)", what, code.name, delay, attempt, attempts)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


class ModelClients:
    """Synchronous batch clients of the embedder and (optionally) the classifier services."""

    def __init__(self, embedder_addr: str, classifier_addr: str | None, *, timeout_s: float, max_batch: int) -> None:
        self._embedder_channel = _channel(embedder_addr)
        self._embedder = embedder_pb2_grpc.EmbedderStub(self._embedder_channel)
        self._classifier_channel = _channel(classifier_addr) if classifier_addr else None
        self._classifier = (
            classifier_pb2_grpc.ClassifierStub(self._classifier_channel) if self._classifier_channel else None
        )
        self._timeout_s = timeout_s
        self.max_batch = max_batch

    @property
    def has_classifier(self) -> bool:
        return self._classifier is not None

    def probe(self) -> tuple[EmbedderIdentity, int]:
        """The running embedder's identity and vector dimension, from one small image."""
        response = _call_with_retries(
            "embedder probe",
            lambda: self._embedder.EmbedBatch(
                embedder_pb2.EmbedBatchRequest(images=[probe_image()]), timeout=self._timeout_s
            ),
        )
        result = response.results[0]
        if result.WhichOneof("outcome") != "embedding":
            raise JobError(f"the embedder refused the probe image: {result.error.message}")
        return EmbedderIdentity(model=response.model.name, version=response.model.version), len(result.embedding.vector)

    def _chunks(self, images: Sequence[bytes]) -> Iterator[list[bytes]]:
        # Every image is within the fetcher's limit (10 MB), so each fits in a request on its own.
        sizes = [len(image) for image in images]
        return bounded_chunks(images, sizes, self.max_batch, MAX_MODEL_REQUEST_BYTES - REQUEST_SLACK_BYTES)

    def embed(self, images: Sequence[bytes]) -> tuple[list[np.ndarray | str], EmbedderIdentity]:
        out: list[np.ndarray | str] = []
        identity = EmbedderIdentity("", "")
        for chunk in self._chunks(images):
            response = _call_with_retries(
                "embedder EmbedBatch",
                lambda chunk=chunk: self._embedder.EmbedBatch(
                    embedder_pb2.EmbedBatchRequest(images=chunk), timeout=self._timeout_s
                ),
            )
            identity = EmbedderIdentity(model=response.model.name, version=response.model.version)
            for result in response.results:
                if result.WhichOneof("outcome") == "embedding":
                    out.append(np.asarray(result.embedding.vector, dtype=np.float32))
                else:
                    out.append(f"embedder refused the image: {result.error.message}")
        return out, identity

    def classify(self, images: Sequence[bytes]) -> list[dict[str, str] | str]:
        assert self._classifier is not None
        out: list[dict[str, str] | str] = []
        for chunk in self._chunks(images):
            response = _call_with_retries(
                "classifier ClassifyBatch",
                lambda chunk=chunk: self._classifier.ClassifyBatch(
                    classifier_pb2.ClassifyBatchRequest(images=chunk, top_k=1), timeout=self._timeout_s
                ),
            )
            for result in response.results:
                if result.WhichOneof("outcome") == "classification":
                    out.append({p.attribute: p.labels[0].label for p in result.classification.attributes if p.labels})
                else:
                    out.append(f"classifier refused the image: {result.error.message}")
        return out

    def close(self) -> None:
        self._embedder_channel.close()
        if self._classifier_channel is not None:
            self._classifier_channel.close()


class DirectTarget:
    """Embeds with the model services and writes one collection of a store, switching the alias when rebuilding."""

    def __init__(
        self,
        catalog: CollectionCatalog,
        models: ModelClients,
        alias: str,
        *,
        switch: bool = True,
        keep_old: bool = False,
        sharded: bool = False,
    ) -> None:
        self._catalog = catalog
        self._sharded = sharded
        self._models = models
        self._alias = alias
        self._switch = switch
        self._keep_old = keep_old
        self._index: VectorIndex | None = None
        self.identity: EmbedderIdentity | None = None
        self.live: str | None = None
        self.collection = ""
        self.rebuilding = False
        self.times = StageTimes()

    def prepare(self) -> str:
        identity, dim = self._models.probe()
        self.identity = identity
        self.live = self._catalog.resolve(self._alias)
        live_info = self._catalog.info(self.live) if self.live is not None else None
        if live_info is not None and live_info.embedder == identity and live_info.dim == dim:
            self.collection, self.rebuilding = self.live or self._alias, False
        else:
            self.collection, self.rebuilding = versioned_name(self._alias, identity), True
        if self.rebuilding and self.collection == self.live:
            raise JobError(f"collection {self.collection} is live and holds other vectors than {identity}")
        for attempt in (1, 2):
            # Shards of one rebuild may race to create the new collection: the loser re-opens it.
            try:
                self._index = self._catalog.open(self.collection)
            except StoreLockedError as locked:
                raise JobError(
                    f"{locked} (while the gateway runs, write its catalogue through it: --gateway)"
                ) from None
            try:
                self._index.ensure_collection(dim, identity)
                break
            except Exception:
                self._catalog.release(self._index)
                if attempt == 2:
                    raise
                time.sleep(1.0)
        if self.rebuilding:
            held = f"{live_info.embedder}" if live_info else "nothing"
            logger.info(
                "building collection %s for %s beside the live %s (%s); alias %s switches when complete",
                self.collection,
                identity,
                self.live or "(none)",
                held,
                self._alias,
            )
        return f"{identity.model}@{identity.version}"

    def _open_index(self) -> VectorIndex:
        if self._index is None:
            raise JobError("the target is not prepared (or already finished)")
        return self._index

    def force_switch(self) -> None:
        self._switch = True

    def describe(self) -> str:
        mode = f"rebuild into {self.collection} (live: {self.live or 'none'})" if self.rebuilding else "in place"
        return f"{self._catalog.label} collection {self.collection}, {mode}"

    def digests(self) -> Iterator[tuple[int, str]]:
        for point_id, payload in self._open_index().scroll([CONTENT_HASH_KEY], 2000):
            yield point_id, str(payload.get(CONTENT_HASH_KEY, ""))

    def write(self, items: Sequence[WriteItem]) -> list[str | None]:
        images = [item.image for item in items]
        values = [item.row.payload_values() for item in items]
        started = time.perf_counter()
        vectors, identity = self._models.embed(images)
        self.times.add("embed", time.perf_counter() - started)
        if identity != self.identity:
            raise JobError(f"the embedder changed from {self.identity} to {identity} during the run; run again")
        errors: list[str | None] = [v if isinstance(v, str) else None for v in vectors]
        for i, item in enumerate(items):
            try:
                check_item(item.row.id, values[i], item.content_hash)
            except ValueError as bad:
                errors[i] = str(bad)
        missing = [missing_attributes(v) for v in values]
        predictions: list[dict[str, str] | None] = [None] * len(items)
        wanted = (
            [i for i in range(len(items)) if errors[i] is None and missing[i]] if self._models.has_classifier else []
        )
        if wanted:
            started = time.perf_counter()
            results = self._models.classify([images[i] for i in wanted])
            self.times.add("classify", time.perf_counter() - started)
            for i, result in zip(wanted, results, strict=True):
                if isinstance(result, str):
                    errors[i] = result
                else:
                    predictions[i] = predicted_attributes(result, missing[i])
        points = [
            StoredPoint(
                id=item.row.id,
                vector=vectors[i],  # type: ignore[arg-type]
                payload=stored_payload(values[i], predictions[i], item.content_hash),
            )
            for i, item in enumerate(items)
            if errors[i] is None
        ]
        started = time.perf_counter()
        self._open_index().upsert(points)
        self.times.add("upsert", time.perf_counter() - started)
        started = time.perf_counter()
        if self._open_index().build_full_segment():
            self.times.add("optimize", time.perf_counter() - started)
        return errors

    def delete(self, ids: Sequence[int]) -> int:
        return len(self._open_index().delete(list(ids)))

    def finish(self, *, complete: bool) -> list[str]:
        if not self.rebuilding:
            if complete:
                self._optimize()  # in place, so no gateway holds the collection: fold this run's writes in
            return []
        if not complete:
            return [f"collection {self.collection} is incomplete; alias {self._alias} not switched (run again)"]
        if self._sharded and not self._switch:
            return [f"this shard of {self.collection} is complete; once every shard is, run with --switch-only"]
        if not self._switch:
            return [f"collection {self.collection} is complete; alias {self._alias} not switched (--no-switch)"]
        self._optimize()  # the graph index, built before any search sees the collection
        self._catalog.release(self._open_index())
        self._index = None
        old = self.live
        self._catalog.switch(self._alias, self.collection)
        notes = [f"alias {self._alias} switched to {self.collection}"]
        if old is not None and old != self.collection:
            if self._keep_old:
                notes.append(f"previous collection {old} kept (--keep-old)")
            elif self._catalog.drop(old):
                notes.append(f"previous collection {old} dropped")
            else:
                notes.append(f"previous collection {old} is still open (the gateway): it drops it when it moves over")
        return notes

    def _optimize(self) -> None:
        started = time.perf_counter()
        if self._open_index().optimize():
            self.times.add("optimize", time.perf_counter() - started)

    def close(self) -> None:
        if self._index is not None:
            self._catalog.release(self._index)
            self._index = None
        self._models.close()
        self._catalog.close()


def catalogue_item(item: WriteItem) -> gateway_pb2.CatalogueItem:
    """The gateway's message for an item: the manifest's values (the gateway predicts the missing ones)."""
    return gateway_pb2.CatalogueItem(
        id=item.row.id,
        image=item.image,
        payload=payload_to_proto(item.row.payload_values()),
        content_hash=item.content_hash,
    )


class _MetadataInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata (the API key) to every call."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=tuple(details.metadata or ()) + self._metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class GatewayTarget:
    """Writes through the gateway's catalogue RPCs (the Edge store's single writer)."""

    def __init__(self, addr: str, *, timeout_s: float, api_key: str | None = None, tls_ca: bytes | None = None) -> None:
        self._addr = addr
        self._channel = _channel(addr, tls_ca)
        if api_key:
            # The gateway's write key (catalogue writes need one unless the gateway allows unauthenticated ones).
            auth = (("authorization", f"Bearer {api_key}"),)
            self._channel = grpc.intercept_channel(self._channel, _MetadataInterceptor(auth))
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)
        self._timeout_s = timeout_s
        self._max_batch = 32
        self._max_bytes = 4 * 1024 * 1024
        self.times = StageTimes()

    def prepare(self) -> str:
        stats = _call_with_retries(
            "gateway GetStats", lambda: self._stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=self._timeout_s)
        )
        running = stats.running_embedder
        if not running.name:
            raise JobError(f"the gateway at {self._addr} does not know its embedder (is the embedder up?)")
        # Writes go in batches of at most what the gateway takes in one UpsertBatch (items and bytes).
        self._max_batch = stats.max_upsert_batch or self._max_batch
        self._max_bytes = stats.max_request_bytes or self._max_bytes
        stored = stats.stored_embedder if stats.HasField("stored_embedder") else None
        if stored is not None and stored.name and (stored.name, stored.version) != (running.name, running.version):
            raise JobError(
                f"the catalogue holds vectors of {stored.name}@{stored.version} but the gateway embeds with "
                f"{running.name}@{running.version}: rebuild it beside the live one with --edge-dir (or --qdrant-url)"
                " and --embedder, which switches the alias when complete"
            )
        return f"{running.name}@{running.version}"

    def describe(self) -> str:
        return f"gateway {self._addr}"

    def digests(self) -> Iterator[tuple[int, str]]:
        def call() -> list[tuple[int, str]]:
            pairs: list[tuple[int, str]] = []
            for page in self._stub.ListItems(gateway_pb2.ListItemsRequest(), timeout=max(self._timeout_s, 300)):
                pairs.extend((int(d.id), d.content_hash) for d in page.items)
            return pairs

        yield from _call_with_retries("gateway ListItems", call)

    def write(self, items: Sequence[WriteItem]) -> list[str | None]:
        budget = self._max_bytes - REQUEST_SLACK_BYTES
        messages = [catalogue_item(item) for item in items]
        sizes = [message.ByteSize() + 8 for message in messages]  # + the field's tag and length
        fits = [i for i, size in enumerate(sizes) if size <= budget]
        responses: list[gateway_pb2.UpsertItemsResponse] = []
        started = time.perf_counter()
        for chunk in bounded_chunks([messages[i] for i in fits], [sizes[i] for i in fits], self._max_batch, budget):
            request = gateway_pb2.UpsertBatchRequest(items=chunk)
            reply = _call_with_retries(
                "gateway UpsertBatch",
                lambda request=request: self._stub.UpsertBatch(
                    request, timeout=max(self._timeout_s, 10 + len(request.items))
                ),
            )
            responses.extend(reply.results)
        self.times.add("gateway upsert (embed+classify+store)", time.perf_counter() - started)
        by_id = {r.id: r for r in responses}
        errors: list[str | None] = []
        for item, size in zip(items, sizes, strict=True):
            response = by_id.get(item.row.id)
            if size > budget:
                errors.append(
                    f"item is {size} bytes, more than the gateway accepts in one request ({self._max_bytes} bytes;"
                    " see GATEWAY_MAX_IMAGE_BYTES)"
                )
            elif response is None:
                errors.append("the gateway gave no answer for this item")
            elif response.upserted:
                errors.append(None)
            else:
                errors.append(f"gateway refused the item: {response.error.message or 'unknown error'}")
        return errors

    def delete(self, ids: Sequence[int]) -> int:
        before = self._count()
        _call_with_retries(
            "gateway DeleteItems",
            lambda: self._stub.DeleteItems(gateway_pb2.DeleteItemsRequest(ids=list(ids)), timeout=self._timeout_s),
        )
        return before - self._count()

    def _count(self) -> int:
        stats = _call_with_retries(
            "gateway GetStats", lambda: self._stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=self._timeout_s)
        )
        return int(stats.item_count)

    def finish(self, *, complete: bool) -> list[str]:
        return []

    def close(self) -> None:
        self._channel.close()
