"""How the embedded Qdrant Edge store indexes and searches: the graph (HNSW) parameters, when a segment gets a graph
at all, and the search parameters, with the defaults measured by ``bench/store_search.py`` (see bench/README.md).

Qdrant decides per segment and per query between the graph and an exact scan, from two sizes given here in points
(Qdrant takes kilobytes of vectors, which depend on the dimension):

- ``index_from_points``: a segment gets a graph once it holds this many points, when ``optimize()`` runs; below
  it, an exact scan is faster than a graph search (measured crossover), so small catalogues stay exact.
- ``full_scan_points``: a filtered search whose filter matches fewer points than this scans those points exactly
  through the payload index, so a rare filter value (a subCategory with 10 items) is answered exactly.

Filtered searches above that use ACORN (Qdrant's filtered graph search that also walks through non-matching
neighbours), which keeps recall where a plain filtered graph walk loses it (0.78-0.89 at hnsw_ef 512 measured on
1M points without it, issue 29).

A filter far from the query (a shoe photo filtered to Topwear) is the graph's weak case and no setting here fixes
it: the exact answers are mostly that subCategory's strays, products lying among another kind's (a shoe that looks
like a top), which its graph links poorly to the rest of its kind, so a walk from the query stops at the kind's
edge (its answers lie about 4% farther than the exact ones). ``bench/store_far_filters.py`` on 100k points (real
embedder vectors and synthetic ones around them; filters matching over 2,000 points on the graph, as over 20,000
do at 1M), far-filter recall@5 at hnsw_ef 128 / 512: these defaults 0.83 / 0.89 (0.95 at 2048, p50 1.7 ms); m 32
with ef_construct 200 0.85 / 0.90; ef_construct 400 0.89 / 0.93 at 3.7x the build CPU; payload_m 64 0.83 / 0.90;
a graph per subCategory only (m 0) 0.81 / 0.89; ACORN for every selectivity 0.83 / 0.89, like 0.5. An exact answer
costs about 60 ns per matching point here (p50 2.1 ms for Topwear's 35k matches at 100k points, so about 20 ms for
its 350k at 1M). What helps: the graph's answer merged with an exact search of copies of the "exposed" points
(one of whose ``exposed_neighbours`` nearest is of another kind), edge_exposed.py: at 1M points far-filter recall@5
0.55 -> 0.87 at hnsw_ef 128 and 0.65 -> 0.94 at 512 (bench/README.md); and a wider graph search beside them. Both
for far filters alone: a search checks first whether its filter is far (none of the query's nearest few points
holds its value, an unfiltered search of about 0.2 ms), and only then merges the copies and searches with
``far_filter_ef`` instead of ``hnsw_ef`` (at 1M points: far-filter recall@5 0.90 -> 0.985, p50 2.2 to 2.7 ms; 2 of
300 own-subCategory searches were taken for far). So the defaults keep hnsw_ef 128 for the rest: the gateway's
own-subCategory filter has recall 0.997 at p50 about 0.5 ms on 1M points. At 4M points (synthetic, about 100 per
real product) as one graph, unfiltered and own-subCategory recall@5 fell to 0.965 / 0.970 at hnsw_ef 128, and far
filters to 0.63: the copies shrink to 2.3% of the points (bench/README.md, far filters).

A large catalogue is built as several graphs (``segment_points``). At 10M points (about 250 synthetic points around
each real product) one graph read recall@5 0.914 unfiltered and 0.921 filtered at hnsw_ef 128, and 0.937 / 0.945 at
512: a graph walk misses near-ties in a dense region, which depends on the density, not the graph's size (a million
points around 4,000 products read the same 0.887 / 0.916). A graph per 2.5M points, each region a quarter as dense,
reads 0.990 / 0.994 at 128, and its build took 33 minutes where one graph took 93 (smaller graphs build faster), for
four graph searches per query: p50 2.3 to 2.6 ms against 0.7 to 1.4 (bench/README.md, a graph per 2.5 million
points). Four graphs each need fewer of the five answers, so there hnsw_ef 64 still reads 0.989 / 0.991 (0.995 / 0.996
at 128 in the same build), and with two search threads the gateway's search at 10M costs 1.2 ms more than on the
sample catalogue (deploy/README.md gives both settings past about 5M products; 128 stays the default, which two
graphs at 4M need). Such a catalogue has no far-filter copies (edge.py): far filters read 0.52 there. At 4M, two
graphs read 0.978 / 0.985 at 128 (far filters 0.50, where one graph with the copies read 0.63).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: gateway settings name EdgeTuning without loading qdrant-edge
    import qdrant_edge as qe


@dataclass(frozen=True)
class EdgeTuning:
    """Index and search parameters of the embedded store; every field has the measured default."""

    #: Graph edges per node, and per node within one payload value's subgraph (filtered search).
    hnsw_m: int = 16
    hnsw_payload_m: int = 16
    hnsw_ef_construct: int = 100
    #: Candidates a graph search keeps; recall@5 against exact rises with it, and so does latency.
    hnsw_ef: int = 128
    #: ACORN for filters that keep at most this fraction of the points; 0 turns ACORN off.
    acorn_max_selectivity: float = 0.5
    #: A segment gets a graph from this many points (below: exact scan, faster there).
    index_from_points: int = 10_000
    #: A filter matching fewer points than this is answered by an exact scan of those points.
    full_scan_points: int = 20_000
    #: Segments the optimiser aims for (fewer: less per-search overhead on one search thread).
    segments: int = 2
    #: A bulk load builds a graph of its own for every this many points (EdgeIndex.build_full_segment), and the
    #: optimiser merges no segment past it; 0: one graph for the whole load. A smaller graph finds more of a dense
    #: region's true nearest points at the same hnsw_ef, for one graph search per segment: bench/README.md, ten
    #: million points.
    segment_points: int = 2_500_000
    #: Keep int8 copies of the vectors for the graph walk (4x less vector memory; rescored with the originals).
    scalar_quantization: bool = False
    #: Threads that build a graph (0: as many as cores).
    indexing_threads: int = 0
    #: A point is exposed when one of this many nearest neighbours has another subCategory; exposed points are
    #: copied after each graph build and scanned exactly beside the graph for a subCategory filter (edge_exposed.py).
    #: The neighbourhood shrinks as the catalogue grows denser: 10 copied 6.2% of 100k points and 1.4% of 1M (far
    #: filter recall@5 0.55 -> 0.60 at 1M), 50 copies 14.6% and 6.3% (0.55 -> 0.87). 0: no copies, the graph alone.
    exposed_neighbours: int = 50
    #: Candidates of a graph search whose subCategory filter is far from the query: none of the query's
    #: ``FAR_CHECK_NEIGHBOURS`` nearest points (edge_exposed.py) holds a value of the filter. Such a walk ends at
    #: the kind's edge, so it searches wider; near filters (the gateway's own) keep hnsw_ef. Far-filter recall@5 at
    #: 1M points with the copies: 0.90 / 0.97 / 0.985 at 128 / 512 / 1024, p50 1.2 / 1.4 / 2.2 ms. At most hnsw_ef
    #: (0): far filters search as near ones do, with the copies beside them.
    far_filter_ef: int = 1024

    def __post_init__(self) -> None:
        for name in ("hnsw_m", "hnsw_ef_construct", "hnsw_ef", "index_from_points", "full_scan_points", "segments"):
            if getattr(self, name) < 1:
                raise ValueError(f"EdgeTuning.{name} must be at least 1, not {getattr(self, name)}")
        for name in ("exposed_neighbours", "far_filter_ef", "segment_points"):
            if getattr(self, name) < 0:
                raise ValueError(f"EdgeTuning.{name} must be at least 0, not {getattr(self, name)}")
        if not 0.0 <= self.acorn_max_selectivity <= 1.0:
            raise ValueError(f"EdgeTuning.acorn_max_selectivity must be in [0, 1], not {self.acorn_max_selectivity}")

    def config(self, dim: int, *, search_threads: int | None = None) -> qe.EdgeConfig:
        """The shard configuration for vectors of dim (Euclidean distance)."""
        import qdrant_edge as qe

        quantization = (
            qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True)
            if self.scalar_quantization
            else None
        )
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Euclid),
            hnsw_config=qe.HnswIndexConfig(
                m=self.hnsw_m,
                ef_construct=self.hnsw_ef_construct,
                full_scan_threshold=_kilobytes(self.full_scan_points, dim),
                max_indexing_threads=self.indexing_threads,
                payload_m=self.hnsw_payload_m,
            ),
            quantization_config=quantization,
            optimizers=qe.EdgeOptimizersConfig(
                default_segment_number=self.segments,
                indexing_threshold=_kilobytes(self.index_from_points, dim),
                max_segment_size=_kilobytes(self.segment_points, dim) if self.segment_points else None,
            ),
            max_search_threads=search_threads,
        )

    def search_params(self, *, exact: bool = False, far: bool = False) -> qe.SearchParams:
        """The search parameters: exact, or the graph's (wider for a filter far from the query)."""
        import qdrant_edge as qe

        if exact:
            return qe.SearchParams(exact=True)
        acorn = (
            qe.AcornSearchParams(enable=True, max_selectivity=self.acorn_max_selectivity)
            if self.acorn_max_selectivity > 0
            else None
        )
        quantization = qe.QuantizationSearchParams(rescore=True, oversampling=2.0) if self.scalar_quantization else None
        ef = max(self.hnsw_ef, self.far_filter_ef) if far else self.hnsw_ef
        return qe.SearchParams(hnsw_ef=ef, acorn=acorn, quantization=quantization)


def _kilobytes(points: int, dim: int) -> int:
    """Qdrant's thresholds are kilobytes of float32 vectors."""
    return max(1, math.ceil(points * dim * 4 / 1024))
