"""python -m services.gateway: serve the gateway configured by GATEWAY_* environment variables."""

from __future__ import annotations

import asyncio
import logging
import sys

from fashionsearch.config import ConfigError
from fashionsearch.logs import configure_logging
from fashionsearch.store import StoreError
from services.gateway.server import serve
from services.gateway.settings import Settings


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as bad:
        configure_logging()
        logging.getLogger("services.gateway").error("bad configuration: %s", bad)
        return 2
    configure_logging(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except (OSError, StoreError) as bad:
        logging.getLogger("services.gateway").error("cannot start: %s", bad)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
