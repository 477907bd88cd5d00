"""The one place that wires settings -> clients and store -> use cases -> servicer."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc.aio

from fashionsearch.channels import channel_options
from fashionsearch.store import VectorIndex, open_catalog
from fashionsearch.store.backup import WriteJournal
from fashionsearch.store.edge_tuning import EdgeTuning
from services.gateway.clients import (
    CallBatcher,
    ClassifierPort,
    DetectorPort,
    EmbedderPort,
    GrpcClassifier,
    GrpcDetector,
    GrpcEmbedder,
)
from services.gateway.one_pass import OnePass
from services.gateway.service import GatewayService
from services.gateway.servicer import GatewayServicer
from services.gateway.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Gateway:
    """The wired gateway: its servicer plus what must be closed at shutdown."""

    servicer: GatewayServicer
    service: GatewayService
    index: VectorIndex
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    batchers: list[CallBatcher[Any]] = field(default_factory=list)
    _closed: bool = False

    async def close(self) -> None:
        """Close the peer channels and the vector store; idempotent."""
        if self._closed:
            return
        self._closed = True
        for batcher in self.batchers:
            await batcher.close()
        for channel in self.channels:
            await channel.close()
        await asyncio.to_thread(self.index.close)


def max_message_bytes(settings: Settings) -> int:
    return settings.limits.max_request_bytes


def bootstrap(
    settings: Settings,
    *,
    classifier: ClassifierPort | None = None,
    embedder: EmbedderPort | None = None,
    index: VectorIndex | None = None,
    detector: DetectorPort | None = None,
) -> Gateway:
    """Build the gateway from settings; any dependency passed in replaces the one settings would make.

    Must run inside the event loop that will serve (gRPC aio channels bind to it).
    """
    channels: list[grpc.aio.Channel] = []
    batchers: list[CallBatcher[Any]] = []
    options = channel_options(max_message_bytes(settings), settings.peer_lb_policy)
    if classifier is None:
        channel = grpc.aio.insecure_channel(str(settings.classifier_addr), options=options)
        channels.append(channel)
        classifier = GrpcClassifier(
            channel,
            timeout_s=settings.classify_timeout_s,
            batch_timeout_s=settings.embed_batch_timeout_s,
            top_k=settings.attribute_top_k,
            with_embedding=settings.one_pass,
            batch_max_size=settings.batch_max_size,
            batch_in_flight=settings.batch_in_flight,
            max_message_bytes=max_message_bytes(settings),
        )
        batchers.append(classifier.batching)
    if embedder is None:
        channel = grpc.aio.insecure_channel(str(settings.embedder_addr), options=options)
        channels.append(channel)
        embedder = GrpcEmbedder(
            channel,
            timeout_s=settings.embed_timeout_s,
            batch_timeout_s=settings.embed_batch_timeout_s,
            batch_max_size=settings.batch_max_size,
            batch_in_flight=settings.batch_in_flight,
            max_message_bytes=max_message_bytes(settings),
        )
        batchers.append(embedder.batching)
    if detector is None and settings.detector_addr is not None:
        channel = grpc.aio.insecure_channel(str(settings.detector_addr), options=options)
        channels.append(channel)
        detector = GrpcDetector(channel, timeout_s=settings.detect_timeout_s)
    compaction = None
    if index is None:
        catalog = open_catalog(
            data_dir=settings.data_dir,
            qdrant_url=settings.qdrant_url,
            qdrant_api_key=settings.qdrant_api_key,
            search_threads=settings.store_search_threads,
            min_free_bytes=settings.store_min_free_mb * 1024 * 1024,
            tuning=EdgeTuning(hnsw_ef=settings.store_hnsw_ef, far_filter_ef=settings.store_far_filter_ef),
            timeout_s=max(1, round(settings.store_timeout_s)),
        )
        index = catalog.live(settings.collection)
        if settings.backup_dir is not None:
            # A backup or compaction taken while writes go on records them (fashionsearch/store/backup.py).
            journal = index = WriteJournal(index)
            if settings.qdrant_url is None:  # the embedded store, imported only then (as open_catalog does)
                from fashionsearch.store.edge import EdgeCatalog
                from fashionsearch.store.edge_compaction import compact

                assert isinstance(catalog, EdgeCatalog)

                work = settings.backup_dir / ".compaction"
                compaction = partial(compact, catalog, settings.collection, journal, work)
    service = GatewayService(
        classifier,
        embedder,
        index,
        settings.limits,
        backups=settings.backup_dir,
        detector=detector,
        compaction=compaction,
        one_pass=OnePass(settings.one_pass),
        outfit_flip_test=settings.outfit_flip_test,
        predicted_subcategory_mass=settings.predicted_subcategory_mass,
    )
    return Gateway(
        servicer=GatewayServicer(service), service=service, index=index, channels=channels, batchers=batchers
    )
