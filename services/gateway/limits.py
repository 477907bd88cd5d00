"""The limits the gateway's use cases work within (services/gateway/service.py), and their defaults.

A module of its own so that the settings (which read these defaults) and the use cases (which take a Limits) both
import it, and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

# Room for protobuf framing and the other fields around the largest accepted image.
MESSAGE_OVERHEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """The gateway settings the use cases need. These defaults are the settings' too: Settings reads them from here,
    so each is written once."""

    default_top_k: int = 5
    max_top_k: int = 100
    max_image_bytes: int = 10 * 1024 * 1024
    store_timeout_s: float = 5.0
    #: Items embedded and stored together: the most one UpsertBatch carries, and the embedder's batch size.
    upsert_batch: int = 64
    #: Photos above this many pixels are decoded once here and sent on small (services/gateway/prepare.py);
    #: 0 turns it off.
    shrink_above_pixels: int = 2_000_000
    shrink_side: int = 256

    @property
    def max_request_bytes(self) -> int:
        """The largest request message: the largest image plus room for framing. The gRPC server and its peer
        channels are configured with it, and GetStats reports it so batch jobs can fit their requests in it."""
        return self.max_image_bytes + MESSAGE_OVERHEAD_BYTES
