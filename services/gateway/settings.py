"""Gateway settings, from GATEWAY_* environment variables only, validated before anything binds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fashionsearch.channels import LB_POLICIES
from fashionsearch.config import Address, ConfigError, Env
from fashionsearch.store.edge_tuning import EdgeTuning
from services.gateway.limits import MESSAGE_OVERHEAD_BYTES, Limits
from services.gateway.predicted import PREDICTED_SUBCATEGORY_MASS
from services.gateway.security import ApiKeys, check_tls_files, parse_api_keys

DEFAULT_HTTP_PORT = 8080


@dataclass(frozen=True)
class Settings:
    """Everything the gateway reads from its environment. Each default is the one the environment gets: from_env()
    reads the class's own defaults."""

    port: int = 50050
    host: str = "[::]"
    classifier_addr: Address = Address("localhost", 50051)
    embedder_addr: Address = Address("localhost", 50052)
    #: The detector service (outfit search, crop=auto); None (GATEWAY_DETECTOR_ADDR empty): those answer
    #: FAILED_PRECONDITION and every other call works as before.
    detector_addr: Address | None = None
    #: SearchOutfit reads each photo and each product cut out of it twice, as they are and mirrored (the
    #: detector's flip test and services/gateway/readings.py): more products found, for about twice the work of
    #: an outfit search (bench/README.md). Search's crop=auto is not affected.
    outfit_flip_test: bool = True
    #: A search filtered by the photo's predicted subCategory also takes the classifier's next most probable ones
    #: while the probabilities taken sum to less than this (GATEWAY_PREDICTED_SUBCATEGORY_MASS; at most
    #: attribute_top_k values); 0 takes the most probable alone.
    predicted_subcategory_mass: float = PREDICTED_SUBCATEGORY_MASS
    data_dir: Path = Path("data/qdrant-edge")
    qdrant_url: str | None = None
    #: Qdrant's API key (QDRANT__SERVICE__API_KEY on the server), from the file GATEWAY_QDRANT_API_KEY_FILE names.
    qdrant_api_key: str | None = field(default=None, repr=False)
    collection: str = "catalogue"
    classify_timeout_s: float = 2.0
    embed_timeout_s: float = 2.0
    embed_batch_timeout_s: float = 10.0
    detect_timeout_s: float = 2.0
    store_timeout_s: float = Limits.store_timeout_s
    #: Concurrent searches' Classify / Embed calls sent together as one batch call of up to this many images
    #: (services/gateway/clients.py); 1 sends each alone. At most the model services' *_MAX_BATCH.
    batch_max_size: int = 32
    #: Batch calls to each model service in flight at once (GATEWAY_BATCH_IN_FLIGHT). With one pass the
    #: classifier does a search's model work alone; two calls in flight let it use two cores when it runs two
    #: batches at once (CLASSIFIER_MAX_CONCURRENT_BATCHES), measured in bench/README.md.
    batch_in_flight: int = 1
    default_top_k: int = Limits.default_top_k
    max_top_k: int = Limits.max_top_k
    attribute_top_k: int = 3
    max_image_bytes: int = Limits.max_image_bytes
    upsert_batch: int = Limits.upsert_batch
    store_search_threads: int = 1
    #: Qdrant Edge's graph search: candidates kept (recall@5 against exact rises with it, and latency;
    #: bench/README.md has the measurements).
    store_hnsw_ef: int = EdgeTuning.hnsw_ef
    #: ... and for a subCategory filter far from the photo (none of its nearest points holds it); 0: as hnsw_ef.
    store_far_filter_ef: int = EdgeTuning.far_filter_ef
    #: Qdrant Edge: writes are refused (HTTP 507) while the data directory's disk has less free space than this, so
    #: the store's memory-mapped files never meet a full disk (fashionsearch/store/edge.py).
    store_min_free_mb: int = 64
    #: Folder the gateway writes catalogue backups into (POST /v1/admin/backup, python -m jobs.backup); None: off.
    backup_dir: Path | None = None
    grace_s: float = 5.0
    log_level: str = "INFO"
    #: Port of the HTTP/JSON API and web page (services/gateway/http/) on the same host as gRPC; 0 picks a free
    #: port, None turns HTTP off (GATEWAY_HTTP_ENABLED=false).
    http_port: int | None = DEFAULT_HTTP_PORT
    #: None: derived from max_image_bytes (http_body_limit); a value caps it lower.
    http_max_body_bytes: int | None = None
    #: Folder that relative image references (payload image_ref) resolve against, served under /images/.
    image_root: Path | None = None
    #: Hosts whose http(s) image_ref URLs the gateway hands to browsers (hit image_url, the /image redirect); an
    #: image URL on any other host is not shown, so a catalogue writer cannot make the gateway an open redirect.
    image_url_hosts: tuple[str, ...] = ()
    #: API keys for reads and catalogue writes (services/gateway/security.py has the policy); never printed.
    read_api_keys: tuple[str, ...] = field(default=(), repr=False)
    write_api_keys: tuple[str, ...] = field(default=(), repr=False)
    #: With no write keys, writes are refused unless this is true (local development and tests only).
    allow_unauthenticated_writes: bool = False
    #: PEM certificate chain and private key: both set = TLS on the gRPC and HTTP ports.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Search photos above this many pixels are decoded once in the gateway and sent on at a reduced scale
    #: keeping at least shrink_side pixels a side (services/gateway/prepare.py); 0 = off.
    shrink_above_pixels: int = Limits.shrink_above_pixels
    shrink_side: int = Limits.shrink_side
    #: gRPC calls and HTTP requests in progress at once, together (services/gateway/admission.py); more are refused
    #: at once: RESOURCE_EXHAUSTED / 503, with a retry hint.
    max_concurrent_rpcs: int = 256
    #: Request bytes in flight (gRPC messages and HTTP bodies together); more are refused at once, with a retry hint.
    max_bytes_in_flight: int = 256 * 1024 * 1024
    #: The longest an HTTP connection may take to send a request's headers (from its opening or its last answer;
    #: the keep-alive timeout too), the longest wait for the next part of a body (408), and the longest an
    #: UpsertItems stream may send nothing while the gateway has nothing of it in hand (DEADLINE_EXCEEDED). Bodies
    #: and stream messages hold the cap only for the bytes that arrived (services/gateway/admission.py).
    #: gRPC calls one connection may carry at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS, as nginx's
    #: http2_max_concurrent_streams): a call waiting for its request holds no place in the cap above, so this bounds
    #: what one client can leave waiting.
    max_streams_per_connection: int = 128
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 10.0
    #: ... and the slowest a body may come on the whole (Apache mod_reqtimeout's MinRate): after the body timeout,
    #: each second more needs this many bytes more, or 408. A body that trickles a byte short of each body timeout
    #: would otherwise hold its connection and its bytes for hours; 0 turns it off.
    http_body_min_rate_bps: int = 500
    stream_idle_timeout_s: float = 30.0

    #: Port of GET /metrics (Prometheus): the same as http_port serves it beside the API, another port on a listener
    #: of its own; None = none (GATEWAY_METRICS_PORT=0). By default the HTTP port's default.
    metrics_port: int | None = DEFAULT_HTTP_PORT
    #: How calls spread over the addresses a peer's name resolves to: pick_first (one connection, gRPC's default)
    #: or round_robin (every address, per call: replicas behind a Kubernetes headless Service).
    peer_lb_policy: str = "pick_first"
    #: Ask the classifier for the photo's vector too, and use it instead of calling the embedder while it is the
    #: running embedder's (one trunk pass per photo, services/gateway/one_pass.py); false: always both services.
    one_pass: bool = True

    @property
    def http_body_limit(self) -> int:
        """The largest HTTP body any request could need: one image of max_image_bytes base64-encoded in a POST
        /v1/items (the largest form an accepted image takes), plus room for the JSON around it. Anything larger is
        refused from its Content-Length, before it is read."""
        request = self.limits.max_request_bytes
        derived = 4 * -(-request // 3) + MESSAGE_OVERHEAD_BYTES
        return min(self.http_max_body_bytes or derived, derived)

    @property
    def limits(self) -> Limits:
        """What the use cases need of these settings."""
        return Limits(
            default_top_k=self.default_top_k,
            max_top_k=self.max_top_k,
            max_image_bytes=self.max_image_bytes,
            store_timeout_s=self.store_timeout_s,
            upsert_batch=self.upsert_batch,
            shrink_above_pixels=self.shrink_above_pixels,
            shrink_side=self.shrink_side,
        )

    @property
    def metrics_on_http_port(self) -> bool:
        """Whether the HTTP API serves /metrics itself (the metrics port is its port), not a server of its own."""
        return self.metrics_port is not None and self.metrics_port == self.http_port

    @property
    def api_keys(self) -> ApiKeys:
        return ApiKeys(self.read_api_keys, self.write_api_keys, self.allow_unauthenticated_writes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env("GATEWAY_", environ)
        qdrant_url = env.get_str("QDRANT_URL", "") or None
        if qdrant_url is not None and not qdrant_url.startswith(("http://", "https://")):
            raise ConfigError(f"GATEWAY_QDRANT_URL={qdrant_url!r}: expected an http:// or https:// URL")
        collection = env.get_str("COLLECTION", cls.collection)
        if not collection.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"GATEWAY_COLLECTION={collection!r}: use letters, digits, '-' and '_' only")
        default_top_k = env.get_int("DEFAULT_TOP_K", cls.default_top_k, min=1)
        max_top_k = env.get_int("MAX_TOP_K", cls.max_top_k, min=1, max=1000)
        if default_top_k > max_top_k:
            raise ConfigError(f"GATEWAY_DEFAULT_TOP_K={default_top_k} is above GATEWAY_MAX_TOP_K={max_top_k}")
        write_keys = parse_api_keys(
            "GATEWAY_WRITE_API_KEYS", env.get_str("WRITE_API_KEYS", ""), env.get_str("WRITE_API_KEYS_FILE", "")
        )
        read_keys = parse_api_keys(
            "GATEWAY_READ_API_KEYS", env.get_str("READ_API_KEYS", ""), env.get_str("READ_API_KEYS_FILE", "")
        )
        allow_unauthenticated_writes = env.get_bool("ALLOW_UNAUTHENTICATED_WRITES", False)
        if write_keys and allow_unauthenticated_writes:
            raise ConfigError(
                "GATEWAY_ALLOW_UNAUTHENTICATED_WRITES=true contradicts GATEWAY_WRITE_API_KEYS; set one or the other"
            )
        data_dir = env.path("DATA_DIR", cls.data_dir)
        if qdrant_url is None and data_dir.exists() and not data_dir.is_dir():
            raise ConfigError(f"GATEWAY_DATA_DIR={str(data_dir)!r}: is a file, not a directory for the vector store")
        http_port = env.port("HTTP_PORT", DEFAULT_HTTP_PORT) if env.get_bool("HTTP_ENABLED", True) else None
        tls_cert = env.path("TLS_CERT_FILE", ".", must_exist="file") if env.get_str("TLS_CERT_FILE", "") else None
        tls_key = env.path("TLS_KEY_FILE", ".", must_exist="file") if env.get_str("TLS_KEY_FILE", "") else None
        check_tls_files(tls_cert, tls_key)
        return cls(
            port=env.port("PORT", cls.port),
            host=env.get_str("HOST", cls.host),
            classifier_addr=env.addr("CLASSIFIER_ADDR", str(cls.classifier_addr)),
            embedder_addr=env.addr("EMBEDDER_ADDR", str(cls.embedder_addr)),
            detector_addr=env.addr("DETECTOR_ADDR", "") if env.get_str("DETECTOR_ADDR", "") else None,
            outfit_flip_test=env.get_bool("OUTFIT_FLIP_TEST", cls.outfit_flip_test),
            predicted_subcategory_mass=env.get_float(
                "PREDICTED_SUBCATEGORY_MASS", cls.predicted_subcategory_mass, min=0.0, max=1.0
            ),
            data_dir=data_dir,
            qdrant_url=qdrant_url,
            qdrant_api_key=read_key_file("GATEWAY_QDRANT_API_KEY_FILE", env.get_str("QDRANT_API_KEY_FILE", "")),
            collection=collection,
            classify_timeout_s=env.get_float("CLASSIFY_TIMEOUT_S", cls.classify_timeout_s, min=0.01, max=600),
            embed_timeout_s=env.get_float("EMBED_TIMEOUT_S", cls.embed_timeout_s, min=0.01, max=600),
            embed_batch_timeout_s=env.get_float("EMBED_BATCH_TIMEOUT_S", cls.embed_batch_timeout_s, min=0.01, max=600),
            detect_timeout_s=env.get_float("DETECT_TIMEOUT_S", cls.detect_timeout_s, min=0.01, max=600),
            store_timeout_s=env.get_float("STORE_TIMEOUT_S", cls.store_timeout_s, min=0.01, max=600),
            batch_max_size=env.get_int("BATCH_MAX_SIZE", cls.batch_max_size, min=1, max=1024),
            batch_in_flight=env.get_int("BATCH_IN_FLIGHT", cls.batch_in_flight, min=1, max=16),
            one_pass=env.get_bool("ONE_PASS", cls.one_pass),
            default_top_k=default_top_k,
            max_top_k=max_top_k,
            attribute_top_k=env.get_int("ATTRIBUTE_TOP_K", cls.attribute_top_k, min=1, max=10),
            max_image_bytes=env.get_int("MAX_IMAGE_BYTES", cls.max_image_bytes, min=1, max=64 * 1024 * 1024),
            upsert_batch=env.get_int("UPSERT_BATCH", cls.upsert_batch, min=1, max=1024),
            store_search_threads=env.get_int("STORE_SEARCH_THREADS", cls.store_search_threads, min=1, max=64),
            store_hnsw_ef=env.get_int("STORE_HNSW_EF", cls.store_hnsw_ef, min=4, max=4096),
            store_far_filter_ef=env.get_int("STORE_FAR_FILTER_EF", cls.store_far_filter_ef, min=0, max=4096),
            store_min_free_mb=env.get_int("STORE_MIN_FREE_MB", cls.store_min_free_mb, min=0, max=1024**2),
            backup_dir=env.path("BACKUP_DIR", ".") if env.get_str("BACKUP_DIR", "") else None,
            grace_s=env.get_float("GRACE_S", cls.grace_s, min=0, max=600),
            log_level=env.choice("LOG_LEVEL", cls.log_level, ("DEBUG", "INFO", "WARNING", "ERROR")),
            http_port=http_port,
            http_max_body_bytes=(
                env.get_int("HTTP_MAX_BODY_BYTES", 0, min=1024, max=1024**3)
                if env.get_str("HTTP_MAX_BODY_BYTES", "")
                else None
            ),
            image_root=env.path("IMAGE_ROOT", "", must_exist="dir") if env.get_str("IMAGE_ROOT", "") else None,
            image_url_hosts=parse_hosts(env.get_str("IMAGE_URL_HOSTS", "")),
            read_api_keys=read_keys,
            write_api_keys=write_keys,
            allow_unauthenticated_writes=allow_unauthenticated_writes,
            tls_cert_file=tls_cert,
            tls_key_file=tls_key,
            shrink_above_pixels=env.get_int("SHRINK_ABOVE_PIXELS", cls.shrink_above_pixels, min=0),
            shrink_side=env.get_int("SHRINK_SIDE", cls.shrink_side, min=16, max=8192),
            max_concurrent_rpcs=env.get_int("MAX_CONCURRENT_RPCS", cls.max_concurrent_rpcs, min=1, max=100_000),
            max_bytes_in_flight=env.get_int(
                "MAX_BYTES_IN_FLIGHT", cls.max_bytes_in_flight, min=1024 * 1024, max=64 * 1024**3
            ),
            max_streams_per_connection=env.get_int(
                "MAX_STREAMS_PER_CONNECTION", cls.max_streams_per_connection, min=1, max=100_000
            ),
            http_header_timeout_s=env.get_float("HTTP_HEADER_TIMEOUT_S", cls.http_header_timeout_s, min=0.01, max=3600),
            http_body_timeout_s=env.get_float("HTTP_BODY_TIMEOUT_S", cls.http_body_timeout_s, min=0.01, max=3600),
            http_body_min_rate_bps=env.get_int("HTTP_BODY_MIN_RATE_BPS", cls.http_body_min_rate_bps, min=0),
            stream_idle_timeout_s=env.get_float("STREAM_IDLE_TIMEOUT_S", cls.stream_idle_timeout_s, min=0.01, max=3600),
            peer_lb_policy=env.choice("PEER_LB_POLICY", cls.peer_lb_policy, LB_POLICIES),
            metrics_port=env.port("METRICS_PORT", DEFAULT_HTTP_PORT if http_port is None else http_port) or None,
        )


def read_key_file(variable: str, file: str) -> str | None:
    """The one secret a file holds (a mounted Kubernetes or Docker secret), stripped; None when no file is named."""
    if not file:
        return None
    try:
        key = Path(file).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as bad:
        raise ConfigError(f"{variable}={file!r}: cannot read the key: {bad}") from None
    if not key:
        raise ConfigError(f"{variable}={file!r}: the file is empty")
    return key


def parse_hosts(text: str) -> tuple[str, ...]:
    """GATEWAY_IMAGE_URL_HOSTS: comma-separated host names (cdn.example.com), compared exactly, lower case."""
    hosts = [host.strip().lower().rstrip(".") for host in text.split(",") if host.strip()]
    for host in hosts:
        if not all(c.isascii() and (c.isalnum() or c in ".-") for c in host) or host.startswith((".", "-")):
            raise ConfigError(
                f"GATEWAY_IMAGE_URL_HOSTS: {host!r} is not a host name; give names such as cdn.example.com, without"
                " scheme, port or path"
            )
    return tuple(dict.fromkeys(hosts))
