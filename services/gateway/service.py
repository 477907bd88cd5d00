"""The gateway's use cases: search, outfit search, more-like-this and catalogue writes, over injected ports.

The vector store is synchronous (Qdrant Edge runs in process), so its calls run in worker threads with a time
limit; the classifier and embedder are awaited concurrently. An outfit search asks the detector where the products
are, cuts each out (crops.py) and searches each like a photo; its cut-outs' classify and embed calls are made
together, so they go out as one batch call each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from fashionsearch import metrics, naming
from fashionsearch.catalogue import (
    CONTENT_HASH_KEY,
    check_id,
    check_item,
    missing_attributes,
    predicted_attributes,
    stored_payload,
)
from fashionsearch.decode_threads import run_decoding
from fashionsearch.detection import Detection
from fashionsearch.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    FashionSearchError,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from fashionsearch.images import ImageLimits
from fashionsearch.store import (
    FILTER_FIELDS,
    CollectionMismatchError,
    Hit,
    StoredPoint,
    StoreError,
    StoreFullError,
    StoreUnavailableError,
    UnknownFilterFieldError,
    VectorIndex,
)
from fashionsearch.store.backup import BackupInfo, WriteJournal, backup_name, write_backup
from fashionsearch.text_contract import check_query
from fashionsearch.text_query import refine_vector
from services.gateway import crops, readings, words
from services.gateway.clients import ClassifierPort, DetectorPort, EmbedderPort
from services.gateway.domain import (
    Analysis,
    CatalogueItem,
    Classification,
    Crop,
    Embedding,
    FilterMode,
    FoundProducts,
    OutfitItem,
    OutfitResult,
    QueryTerm,
    SearchOptions,
    SearchResult,
    SimilarResult,
    Stats,
    StoredItem,
    TextEmbedding,
    TextMatch,
    TextSearchOptions,
    TextSearchResult,
    UpsertOutcome,
)
from services.gateway.limits import Limits
from services.gateway.one_pass import OnePass
from services.gateway.predicted import (
    CATEGORY_FIELD,
    PREDICTED_SUBCATEGORY_MASS,
    TYPE_FIELD,
    missing_types,
    predicted_filter,
    put_in,
    wanted_types,
    widened_by_group,
)
from services.gateway.prepare import may_shrink, shrink_photo

if TYPE_CHECKING:  # the embedded store's module loads qdrant-edge: a gateway on a Qdrant server never does
    from fashionsearch.store.edge_compaction import Compaction

logger = logging.getLogger(__name__)

T = TypeVar("T")

_END = object()

#: How long a count of the catalogue's categories (CATEGORY_FIELD, the web page's filter) is kept: a count reads
#: every stored item, and every write through this service drops it.
CATEGORY_TTL_S = 30.0


def refuse_repeated_ids(items: Sequence[CatalogueItem], where: str) -> None:
    """InvalidArgument when a request names a product id twice: which of the two should win is not for the gateway
    to guess (UpsertBatch, POST /v1/items)."""
    seen: set[int] = set()
    for item in items:
        if item.id in seen:
            raise InvalidArgument(f"product id {item.id} appears more than once in {where}")
        seen.add(item.id)


class GatewayService:
    """Search and catalogue use cases; every dependency is a constructor argument."""

    def __init__(
        self,
        classifier: ClassifierPort,
        embedder: EmbedderPort,
        index: VectorIndex,
        limits: Limits = Limits(),  # noqa: B008 - frozen
        *,
        backups: Path | None = None,
        detector: DetectorPort | None = None,
        compaction: Callable[[], Compaction] | None = None,
        one_pass: OnePass | None = None,
        outfit_flip_test: bool = True,
        predicted_subcategory_mass: float = PREDICTED_SUBCATEGORY_MASS,
    ) -> None:
        self._backups = backups
        #: SearchOutfit asks the detector for its flip test and reads each product cut out of the photo twice, as
        #: it is and mirrored (GATEWAY_OUTFIT_FLIP_TEST; services/gateway/readings.py).
        self._outfit_flip_test = outfit_flip_test
        self._predicted_mass = predicted_subcategory_mass
        self._detector = detector
        self._compaction = compaction
        self._classifier = classifier
        self._embedder = embedder
        self._one_pass = one_pass or OnePass()
        self._index = index
        self._limits = limits
        self._collection_lock = asyncio.Lock()
        self._categories: tuple[float, list[tuple[str, int]]] | None = None

    # ---- validation -------------------------------------------------------------------------------------------

    def _check_image(self, image: bytes) -> None:
        if not image:
            raise InvalidArgument("image is empty (0 bytes)")
        if len(image) > self._limits.max_image_bytes:
            raise InvalidArgument(
                f"image is {len(image)} bytes, more than the limit of {self._limits.max_image_bytes} bytes"
            )

    def _top_k(self, top_k: int | None) -> int:
        if top_k is None:
            return self._limits.default_top_k
        if not 1 <= top_k <= self._limits.max_top_k:
            raise InvalidArgument(f"top_k must be between 1 and {self._limits.max_top_k}, got {top_k}")
        return top_k

    @staticmethod
    def _explicit_filters(options: SearchOptions) -> dict[str, tuple[str, ...]]:
        if options.mode is not FilterMode.EXPLICIT:
            if options.filters:
                raise InvalidArgument("filters are only allowed with the explicit filter mode")
            return {}
        if not options.filters:
            raise InvalidArgument("the explicit filter mode needs at least one filter (use no-filter mode for none)")
        filters: dict[str, tuple[str, ...]] = {}
        for name, values in options.filters:
            if name not in FILTER_FIELDS:
                raise InvalidArgument(f"unknown filter field {name!r}; allowed: {', '.join(FILTER_FIELDS)}")
            if name in filters:
                raise InvalidArgument(f"filter field {name!r} is given twice; list its values in one filter")
            cleaned = tuple(dict.fromkeys(v for v in values if v.strip()))
            if not cleaned:
                raise InvalidArgument(f"filter on {name!r} has no values")
            filters[name] = cleaned
        return filters

    @staticmethod
    def _check_id(item_id: int) -> None:
        try:
            check_id(item_id)
        except ValueError as bad:
            raise InvalidArgument(str(bad)) from None

    # ---- store access -----------------------------------------------------------------------------------------

    async def _store(self, what: str, call: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        try:
            with metrics.timed(metrics.STORE_SECONDS.labels(what)):
                return await asyncio.wait_for(asyncio.to_thread(call, *args), timeout_s or self._limits.store_timeout_s)
        except TimeoutError:
            raise DeadlineExceeded(f"the vector store did not answer {what} in time") from None
        except (StoreUnavailableError, StoreFullError) as error:
            logger.warning("vector store refused %s: %s", what, error)
            raise
        except (CollectionMismatchError, UnknownFilterFieldError):
            raise  # the catalogue's state or the request: their own status says it (fashionsearch/errors.py)
        except StoreError:
            logger.exception("vector store failed on %s", what)
            raise

    async def _check_embedder(self, embedding: Embedding) -> bool:
        """False when the catalogue is empty; FailedPrecondition when its vectors come from another embedder."""
        info = self._index.info()
        if info is None:
            return False
        if info.embedder != embedding.model.identity or info.dim != embedding.vector.shape[0]:
            if await self._store("count", self._index.count) == 0:
                return False
            raise FailedPrecondition(
                f"the catalogue's vectors were made by embedder {info.embedder} (dim {info.dim}), but the running"
                f" embedder is {embedding.model.identity} (dim {embedding.vector.shape[0]}); re-index the catalogue"
            )
        return True

    # ---- use cases --------------------------------------------------------------------------------------------

    async def search(self, image: bytes, options: SearchOptions) -> SearchResult:
        self._check_image(image)
        top_k = self._top_k(options.top_k)
        explicit = self._explicit_filters(options)
        cut = await self._main_product(image) if options.crop is Crop.AUTO else None
        if may_shrink(image, self._limits.shrink_above_pixels):  # most photos: no worker-thread hop (prepare.py)
            shrink = partial(
                shrink_photo, image, above_pixels=self._limits.shrink_above_pixels, side=self._limits.shrink_side
            )
            image = await run_decoding(shrink, [image])
        if cut is None:
            classification, embedding = await self._analyse(image)
        elif cut.beside_whole:  # the main product cut out and the whole photo, read together and averaged
            product, whole = await asyncio.gather(self._analyse(cut.cut), self._analyse(image))
            classification, embedding = readings.average(product, whole)
        else:
            classification, embedding = await self._analyse(cut.cut)
        filters = explicit
        if options.mode is FilterMode.PREDICTED_SUBCATEGORY:
            filters = predicted_filter(classification.attributes, self._predicted_mass)
        vector, filters, refine_terms, reason = await self._refine(embedding.vector, filters, options)
        hits: tuple[Hit, ...] = ()
        if await self._check_embedder(embedding):
            hits = tuple(await self._store("search", self._index.search, vector, top_k, filters))
            if not hits and refine_terms and filters:
                reason = words.join_reasons(reason, words.nothing_matches(filters))
        neighbour_names = [str(h.payload.get("name", "")) for h in hits]
        return SearchResult(
            classification=classification,
            embedder_model=embedding.model,
            suggested_name=classification.suggested_name,
            keywords=tuple(naming.add_neighbour_words(classification.keywords, neighbour_names)),
            hits=hits,
            applied_filters=filters,
            refine_terms=refine_terms,
            reason=reason,
        )

    async def _analyse(self, image: bytes) -> tuple[Classification, Embedding]:
        """A photo's classification and vector: the one path of Search and SearchOutfit (concurrent calls, as an
        outfit's cut-outs are, go out as one batch call to each service). One classifier call in one pass
        (services/gateway/one_pass.py), else both services at once."""
        if self._one_pass.usable():
            classification = await self._classifier.classify(image)
            self._one_pass.saw_classifier(classification)
            if self._one_pass.accepts(classification.embedding):
                assert classification.embedding is not None
                metrics.PHOTOS_ANALYSED.labels("one_pass").inc()
                return classification, classification.embedding
            metrics.PHOTOS_ANALYSED.labels("two_calls").inc()
            return classification, await self._embedder.embed(image)
        metrics.PHOTOS_ANALYSED.labels("two_calls").inc()
        classification, embedding = await _both(self._classifier.classify(image), self._embedder.embed(image))
        self._one_pass.saw_embedder(embedding.model)
        self._one_pass.saw_classifier(classification)
        return classification, embedding

    def _need_detector(self) -> DetectorPort:
        if self._detector is None:
            raise FailedPrecondition("this gateway has no detector (set GATEWAY_DETECTOR_ADDR)")
        return self._detector

    async def _found(
        self, image: bytes, flip_test: bool | None = None, with_candidates: bool = False
    ) -> tuple[FoundProducts, crops.Photo]:
        """The products the detector finds in the photo (with its flip test or without, None: the detector's
        setting; with its candidates or not), and the photo decoded here to cut them out (both at once)."""
        detect = self._need_detector().detect(image, flip_test, with_candidates)
        decode = partial(crops.decode_photo, image, self._photo_limits)
        found, photo = await asyncio.gather(detect, run_decoding(decode, [image]))
        return _same_photo(found, photo), photo

    @property
    def _photo_limits(self) -> ImageLimits:
        """What the gateway decodes to cut products out: any photo the model services would take."""
        return ImageLimits(max_bytes=self._limits.max_image_bytes)

    async def _main_product(self, image: bytes) -> crops.MainProduct | None:
        """The detector's best product cut out of the photo (and whether to read it beside the whole photo), or None
        to read the photo alone: a packshot (told from its pixels first, without the detector), the detector finds
        nothing or the product fills most of it (fashionsearch.main_product). crop=auto is the default, so it is best
        effort: without a detector, or with one down, slow or busy, the whole photo is read."""
        if self._detector is None:
            metrics.SEARCH_CROPS.labels("no_detector").inc()
            return None
        # The photo is decoded first: a packshot, told from its pixels, needs no detector call (most of a packshot
        # search's time and work otherwise). A scene then waits for the decoding before the detector is asked: about
        # 2 to 3 ms more on a 600x800 JPEG than asking both at once (bench/README.md, "Outfit search and crop=auto").
        photo, packshot = await run_decoding(partial(crops.decode_photo_checked, image, self._photo_limits), [image])
        if packshot:
            metrics.SEARCH_CROPS.labels("whole").inc()
            return None
        try:
            found = await self._detector.detect(image, None, False)
        except (Unavailable, DeadlineExceeded, ResourceExhausted) as error:
            logger.warning("crop=auto reads the whole photo: %s", error)
            metrics.SEARCH_CROPS.labels("detector_failed").inc()
            return None
        crop = await run_decoding(partial(crops.main_product_cut, photo, _same_photo(found, photo).detections), [])
        metrics.SEARCH_CROPS.labels("whole" if crop is None else "cut_and_whole" if crop.beside_whole else "cut").inc()
        return crop

    async def search_outfit(self, image: bytes, options: SearchOptions) -> OutfitResult:
        """Every product the detector finds in the photo, each searched like a photo within its predicted
        subCategory (refined by options.refine_text); no product found is an empty result, not an error.

        With the outfit flip test (the default), the detector's weak boxes come too, with its box verification
        rule: each box is read, and kept when the rule says it is a product (`_verified`)."""
        self._check_image(image)
        top_k = self._top_k(options.top_k)
        self._need_detector()
        text = await self._refinement(options.refine_text)
        flip = self._outfit_flip_test
        found, photo = await self._found(image, flip_test=True if flip else None, with_candidates=flip)
        detections = found.detections
        cut = await run_decoding(partial(crops.cut_out, photo, detections, mirrored=flip), []) if detections else []
        read = await asyncio.gather(*(self._analyse(c) for c in cut))
        analysed = readings.merged(read) if flip else read
        kept = [(d, c, e) for d, (c, e) in zip(detections, analysed, strict=True) if self._verified(found, d, c)]
        searchable = bool(kept) and await self._check_embedder(kept[0][2])

        async def item(detection: Detection, classification: Classification, embedding: Embedding) -> OutfitItem:
            filters = widened_by_group(predicted_filter(classification.attributes, self._predicted_mass), detection)
            vector, filters, _, _ = self._refined(embedding.vector, filters, text, FilterMode.PREDICTED_SUBCATEGORY)
            hits = tuple(await self._store("search", self._index.search, vector, top_k, filters)) if searchable else ()
            wanted = wanted_types(classification.attributes, top_k)
            missing = missing_types(wanted, hits, top_k, filters)
            nearest = await asyncio.gather(
                *(self._store("search", self._index.search, vector, 1, {**filters, TYPE_FIELD: (k,)}) for k in missing)
            )
            for found_hits in nearest:
                hits = put_in(hits, found_hits[0], wanted) if found_hits else hits
            names = [str(h.payload.get("name", "")) for h in hits]
            return OutfitItem(
                detection=detection,
                classification=classification,
                keywords=tuple(naming.add_neighbour_words(classification.keywords, names)),
                hits=hits,
                applied_filters=filters,
            )

        items = await asyncio.gather(*(item(d, c, e) for d, c, e in kept))
        return OutfitResult(
            items=tuple(items),
            size=found.size,
            detector_model=found.model,
            embedder_model=kept[0][2].model if kept else None,
            refine_terms=text.terms if text is not None else (),
        )

    @staticmethod
    def _verified(found: FoundProducts, detection: Detection, classification: Classification) -> bool:
        """Whether a detection is served: by the detector's box verification when it came with one fitted on this
        classifier (its top subCategory probability for the cut-out), else by the detector's own threshold."""
        rule = found.verification
        if rule is None:
            return True  # the detector sent only what it serves
        model = classification.model
        if rule.classifier != f"{model.name}:{model.version}":
            metrics.OUTFIT_BOXES.labels("unverified").inc()
            return detection.score >= found.score_threshold
        sub_categories = [a for a in classification.attributes if a.attribute == "subCategory" and a.labels]
        confidence = sub_categories[0].labels[0].probability if sub_categories else 0.0
        kept = rule.keeps(detection.score, confidence)
        metrics.OUTFIT_BOXES.labels("kept" if kept else "dropped").inc()
        return kept

    async def search_by_id(self, item_id: int, options: SearchOptions) -> SimilarResult:
        self._check_id(item_id)
        top_k = self._top_k(options.top_k)
        filters = self._explicit_filters(options)
        found = await self._store("retrieve", self._index.retrieve, [item_id])
        if not found:
            raise NotFound(f"product {item_id} is not in the catalogue")
        item = found[0]
        if options.mode is FilterMode.PREDICTED_SUBCATEGORY:
            sub_category = item.payload.get("subCategory")
            filters = {"subCategory": (str(sub_category),)} if sub_category else {}
        vector, filters, refine_terms, reason = await self._refine(item.vector, filters, options)
        hits = await self._store("search", self._index.search, vector, top_k, filters, (item_id,))
        if not hits and refine_terms and filters:
            reason = words.join_reasons(reason, words.nothing_matches(filters))
        return SimilarResult(hits=tuple(hits), applied_filters=filters, refine_terms=refine_terms, reason=reason)

    async def _refine(
        self, vector: np.ndarray, filters: dict[str, tuple[str, ...]], options: SearchOptions
    ) -> tuple[np.ndarray, dict[str, tuple[str, ...]], tuple[QueryTerm, ...], str]:
        """The photo's vector and filters refined by options.refine_text (services/gateway/words.py), and the reason
        to give when words were set aside for the caller's explicit filters."""
        return self._refined(vector, filters, await self._refinement(options.refine_text), options.mode)

    async def _refinement(self, refine_text: str) -> TextEmbedding | None:
        """What refining words are read as, or None without words."""
        if not refine_text:
            return None
        try:
            text = await self._embedder.embed_text(check_query(refine_text))
        except InvalidArgument as error:
            raise InvalidArgument(f"refine_text: {error.message}") from None
        words.check_refinement(text)
        return text

    @staticmethod
    def _refined(
        vector: np.ndarray, filters: dict[str, tuple[str, ...]], text: TextEmbedding | None, mode: FilterMode
    ) -> tuple[np.ndarray, dict[str, tuple[str, ...]], tuple[QueryTerm, ...], str]:
        if text is None:
            return vector, filters, (), ""
        named = words.word_filters(text.terms, words.REFINE_MIN_CONFIDENCE)
        refined = words.refine_filters(filters, named, mode)
        reason = words.set_aside(named, filters) if mode is FilterMode.EXPLICIT else ""
        return refine_vector(vector, text.vector, words.REFINE_WEIGHT), refined, text.terms, reason

    async def search_text(self, query: str, options: TextSearchOptions) -> TextSearchResult:
        """Products for a text query: its vector in the photos' space, the attribute values its words name as
        filters, or both (options.match)."""
        query = check_query(query)
        top_k = self._top_k(options.top_k)
        explicit = (
            self._explicit_filters(SearchOptions(mode=FilterMode.EXPLICIT, filters=options.filters))
            if options.filters
            else {}
        )
        text = await self._embedder.embed_text(query)
        self._one_pass.saw_embedder(text.image_model)
        match = options.match or words.DEFAULT_MATCH
        understood = words.word_filters(text.terms) if match is not TextMatch.VECTOR else {}
        filters = words.combine(understood, explicit)
        reason = words.nothing_known(text)
        if not reason and match is TextMatch.FILTERS and not understood:
            reason = "no word names a colour, gender, article type, usage or season; match by vector instead"
        hits: tuple[Hit, ...] = ()
        searched = not reason and await self._check_embedder(Embedding(text.vector, text.image_model))
        if searched:
            # Filters alone have no ranking: a zero vector is equally far from every (unit) photo vector.
            vector = np.zeros_like(text.vector) if match is TextMatch.FILTERS else text.vector
            hits = tuple(await self._store("search", self._index.search, vector, top_k, filters))
            reason = words.join_reasons(
                words.set_aside(understood, explicit), words.nothing_matches(filters) if not hits and filters else ""
            )
        return TextSearchResult(
            hits=hits,
            terms=text.terms,
            unknown_words=text.unknown_words,
            applied_filters=filters if searched else {},
            reason=reason,
            text_model=text.model,
            embedder_model=text.image_model,
        )

    async def upsert(self, items: AsyncIterable[CatalogueItem]) -> AsyncIterator[UpsertOutcome]:
        """One outcome per item, in order. Items that arrive together are embedded and stored as one batch (up to
        upsert_batch), while the next ones are read from the stream."""
        queue: asyncio.Queue[CatalogueItem | object] = asyncio.Queue(maxsize=2 * self._limits.upsert_batch)
        failure: list[BaseException] = []
        seen: set[int] = set()  # an id named again in the same stream is refused, as UpsertBatch refuses it

        async def read() -> None:
            try:
                async for item in items:
                    await queue.put(item)
            except Exception as error:  # noqa: BLE001 - re-raised by the consumer below
                failure.append(error)
            await queue.put(_END)

        reader = asyncio.create_task(read())
        try:
            ended = False
            while not ended:
                first = await queue.get()
                if first is _END:
                    break
                batch = [first]
                while len(batch) < self._limits.upsert_batch and not queue.empty():
                    following = queue.get_nowait()
                    if following is _END:
                        ended = True
                        break
                    batch.append(following)
                for outcome in await self._upsert_items(batch, seen):  # type: ignore[arg-type]
                    yield outcome
            if failure:
                raise failure[0]
        finally:
            reader.cancel()

    async def upsert_batch(self, batch: Sequence[CatalogueItem]) -> list[UpsertOutcome]:
        """One outcome per item, in order, for a batch given at once (the UpsertBatch call of batch jobs)."""
        if len(batch) > self._limits.upsert_batch:
            raise InvalidArgument(f"a batch holds at most {self._limits.upsert_batch} items, got {len(batch)}")
        refuse_repeated_ids(batch, "the batch")
        return await self._upsert_items(list(batch))

    async def _upsert_items(self, batch: list[CatalogueItem], seen: set[int] | None = None) -> list[UpsertOutcome]:
        """One outcome per item; with `seen` (the ids a stream named before), an id named again is refused."""
        errors: dict[int, FashionSearchError] = {}
        for index, item in enumerate(batch):
            try:
                if seen is not None:
                    if item.id in seen:
                        raise InvalidArgument(f"product id {item.id} appears more than once in the stream")
                    seen.add(item.id)
                self._check_id(item.id)
                self._check_image(item.image)
                check_item(item.id, item.payload, item.content_hash)
            except ValueError as bad:
                errors[index] = InvalidArgument(str(bad))
            except FashionSearchError as error:
                errors[index] = error
        todo = [i for i in range(len(batch)) if i not in errors]
        try:
            if todo:
                # Items lacking some filter attributes get the classifier's top label for each missing one (stored,
                # so that filtered searches find the item).
                missing = {i: missing_attributes(batch[i].payload) for i in todo}
                analyses = await self.analyse([batch[i].image for i in todo], [bool(missing[i]) for i in todo])
                points: list[StoredPoint] = []
                embedded = [a.embedding for a in analyses if isinstance(a, Analysis)]
                if embedded:  # one reply, one model: the collection is checked once per batch
                    await self._ensure_collection(embedded[0])
                for index, analysis in zip(todo, analyses, strict=True):
                    if isinstance(analysis, FashionSearchError):
                        errors[index] = analysis
                        continue
                    item = batch[index]
                    labels = analysis.classification.top_labels() if analysis.classification else {}
                    predicted = predicted_attributes(labels, missing[index])
                    payload = stored_payload(item.payload, predicted, item.content_hash)
                    points.append(StoredPoint(id=item.id, vector=analysis.embedding.vector, payload=payload))
                if points:
                    await self._store("upsert", self._index.upsert, points)
                    self._categories = None
        except FashionSearchError as error:
            # The whole batch failed (embedder down or slow, store refused): every item not yet failed gets it.
            for index in todo:
                errors.setdefault(index, error)
        for index, failure in errors.items():
            logger.info("upsert of product %s failed: %s", batch[index].id, failure.message)
        return [UpsertOutcome(id=item.id, error=errors.get(index)) for index, item in enumerate(batch)]

    async def analyse(
        self, images: Sequence[bytes], classify: Sequence[bool] | None = None
    ) -> list[Analysis | FashionSearchError]:
        """Attributes and vector of each photo, one outcome per photo in order; raises only when the whole call
        fails (the embedder down or slow). How every batch of photos is read (catalogue writes, crops of a photo).

        In one pass (services/gateway/one_pass.py) one classifier batch call gives both. Otherwise the embedder's
        batch call and, at the same time, the classifier's for the photos `classify` marks (all by default; the
        classification of the others is None), one photo more while it is not known whether one pass is possible.
        """
        marked = [True] * len(images) if classify is None else list(classify)
        if not images:
            return []
        if self._one_pass.usable():
            try:
                classified = await self._classifier.classify_batch(images)
            except FashionSearchError as error:  # the embedder may still answer: two calls, for this batch
                logger.warning("one-pass classification failed, asking the embedder: %s", error.message)
            else:
                return await self._complete(images, classified)
        if self._one_pass.wants_probe() and not any(marked):
            marked[0] = True
        wanted = [i for i, mark in enumerate(marked) if mark]
        metrics.PHOTOS_ANALYSED.labels("two_calls").inc(len(images))
        embeddings, classified = await asyncio.gather(
            self._embedder.embed_batch(images), self._classify_some([images[i] for i in wanted])
        )
        for embedding in embeddings:
            if isinstance(embedding, Embedding):
                self._one_pass.saw_embedder(embedding.model)
                break
        classifications: dict[int, Classification | FashionSearchError] = dict(zip(wanted, classified, strict=True))
        for outcome in classified:
            if isinstance(outcome, Classification):
                self._one_pass.saw_classifier(outcome)
                break
        outcomes: list[Analysis | FashionSearchError] = []
        for index, embedding in enumerate(embeddings):
            classification = classifications.get(index)
            if isinstance(embedding, FashionSearchError):
                outcomes.append(embedding)
            elif isinstance(classification, FashionSearchError) and marked[index]:
                outcomes.append(classification)
            else:
                outcomes.append(
                    Analysis(classification if isinstance(classification, Classification) else None, embedding)
                )
        return outcomes

    async def _classify_some(self, images: list[bytes]) -> list[Classification | FashionSearchError]:
        """The classifier's batch answer, its failure standing for each photo's (the embedder may have answered)."""
        if not images:
            return []
        try:
            return await self._classifier.classify_batch(images)
        except FashionSearchError as error:
            return [error] * len(images)

    async def _complete(
        self, images: Sequence[bytes], classified: list[Classification | FashionSearchError]
    ) -> list[Analysis | FashionSearchError]:
        """One-pass answers as analyses; photos whose answer lacks the running embedder's vector (the classifier
        was just replaced) are embedded by the embedder, and one pass stops until both agree again."""
        lacking = [
            i
            for i, c in enumerate(classified)
            if isinstance(c, Classification) and not self._one_pass.accepts(c.embedding)
        ]
        embedded: dict[int, Embedding | FashionSearchError] = {}
        answered = sum(isinstance(c, Classification) for c in classified)
        metrics.PHOTOS_ANALYSED.labels("one_pass").inc(answered - len(lacking))
        metrics.PHOTOS_ANALYSED.labels("two_calls").inc(len(lacking))
        if lacking:
            self._one_pass.saw_classifier(classified[lacking[0]])  # type: ignore[arg-type]
            embedded = dict(zip(lacking, await self._embedder.embed_batch([images[i] for i in lacking]), strict=True))
        outcomes: list[Analysis | FashionSearchError] = []
        for index, outcome in enumerate(classified):
            if isinstance(outcome, FashionSearchError):
                outcomes.append(outcome)
                continue
            embedding = embedded.get(index, outcome.embedding)
            if isinstance(embedding, FashionSearchError):
                outcomes.append(embedding)
            else:
                assert embedding is not None
                outcomes.append(Analysis(outcome, embedding))
        return outcomes

    async def _ensure_collection(self, embedding: Embedding) -> None:
        identity, dim = embedding.model.identity, int(embedding.vector.shape[0])
        info = self._index.info()
        if info is None or info.embedder != identity or info.dim != dim:
            async with self._collection_lock:
                await self._store("ensure_collection", self._index.ensure_collection, dim, identity)

    async def delete(self, ids: Sequence[int]) -> int:
        for item_id in ids:
            self._check_id(item_id)
        await self._store("delete", self._index.delete, list(ids))
        self._categories = None
        return await self._store("count", self._index.count)

    async def get(self, item_id: int) -> StoredItem:
        self._check_id(item_id)
        found = await self._store("retrieve", self._index.retrieve, [item_id])
        if not found:
            raise NotFound(f"product {item_id} is not in the catalogue")
        return StoredItem(id=found[0].id, payload=found[0].payload)

    async def list_digests(self, page_size: int) -> AsyncIterator[list[tuple[int, str]]]:
        """Pages of (id, content hash) of every stored item ("" when an item has none)."""
        pages = iter(self._page_digests(page_size))
        while True:
            page = await self._store("scroll", next, pages, None)
            if page is None:
                return
            yield page

    def _page_digests(self, page_size: int) -> Iterator[list[tuple[int, str]]]:
        page: list[tuple[int, str]] = []
        for point_id, payload in self._index.scroll([CONTENT_HASH_KEY], page_size):
            page.append((point_id, str(payload.get(CONTENT_HASH_KEY, ""))))
            if len(page) >= page_size:
                yield page
                page = []
        if page:
            yield page

    async def categories(self) -> list[tuple[str, int]]:
        """The CATEGORY_FIELD values in the catalogue with their counts, most common first (kept CATEGORY_TTL_S)."""
        now = time.monotonic()
        if self._categories is None or now - self._categories[0] > CATEGORY_TTL_S:
            # A scan of the whole catalogue: a longer limit than one call's.
            counts = await self._store("categories", self._count_categories, timeout_s=4 * self._limits.store_timeout_s)
            self._categories = (now, sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return self._categories[1]

    def _count_categories(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        if self._index.info() is None:
            return counts
        for _, payload in self._index.scroll([CATEGORY_FIELD], 1000):
            value = str(payload.get(CATEGORY_FIELD) or "")
            if value:
                counts[value] = counts.get(value, 0) + 1
        return counts

    async def backup(self) -> BackupInfo:
        """Write a backup of the live collection into the backup folder while searches and writes go on; consistent
        as of its end (fashionsearch/store/backup.py). FailedPrecondition when backups are off or one is running."""
        if self._backups is None:
            raise FailedPrecondition("backups are off: set GATEWAY_BACKUP_DIR to the folder they go to")
        journal = self._index if isinstance(self._index, WriteJournal) else None
        name = backup_name(str(getattr(self._index, "collection", "") or "catalogue"))
        try:
            return await asyncio.to_thread(
                write_backup, self._index, self._backups, name, source="gateway", journal=journal
            )
        except StoreError as failed:
            raise _store_failure(f"backup {name} failed", failed) from None

    async def compact(self) -> Compaction:
        """Fold the live Edge collection's own writes into a new graph, built in a child process, and switch to it
        (fashionsearch/store/edge_compaction.py). FailedPrecondition when it is not available or fails."""
        if self._compaction is None:
            raise FailedPrecondition("compaction needs the embedded Qdrant Edge store and GATEWAY_BACKUP_DIR")
        try:
            return await asyncio.to_thread(self._compaction)
        except StoreError as failed:
            raise _store_failure("compaction failed", failed) from None

    async def stats(self) -> Stats:
        count = await self._store("count", self._index.count)
        info = self._index.info()
        running_embedder, classifier = await asyncio.gather(self._embedder.model(), self._classifier.model())
        return Stats(
            item_count=count,
            stored_embedder=info.embedder if info is not None else None,
            running_embedder=running_embedder,
            classifier=classifier,
            max_upsert_batch=self._limits.upsert_batch,
            max_request_bytes=self._limits.max_request_bytes,
        )


def _same_photo(found: FoundProducts, photo: crops.Photo) -> FoundProducts:
    """`found`, checked against the gateway's own decoding: both read the same bytes, so a detector that saw another
    size has a bug."""
    if found.size != photo.size:
        raise Internal(f"the detector saw a {found.size} photo, the gateway a {photo.size} one")
    return found


def _store_failure(what: str, failed: StoreError) -> FashionSearchError:
    """An admin operation's store failure with `what` in front and the code of its kind, so a full disk answers
    RESOURCE_EXHAUSTED / 507 as any write refused for room does; a plain StoreError (a collection held elsewhere,
    no collection) is FailedPrecondition: the state of the store, not a server fault."""
    kind = type(failed) if failed.code != StoreError.code else FailedPrecondition
    return kind(f"{what}: {failed.message}")


async def _both(classify: Any, embed: Any) -> tuple[Classification, Embedding]:
    """Run both calls concurrently; the first failure cancels the other and is raised."""
    classify_task = asyncio.ensure_future(classify)
    embed_task = asyncio.ensure_future(embed)
    tasks = (classify_task, embed_task)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task in done and task.exception() is not None:
                raise task.exception()
        return classify_task.result(), embed_task.result()
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
