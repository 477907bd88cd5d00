"""`python -m services.classifier`: configured by CLASSIFIER_* environment variables (see settings.py)."""

from __future__ import annotations

import asyncio
import logging
import sys

from fashionsearch.config import ConfigError
from fashionsearch.logs import configure_logging
from fashionsearch.model_contract import ModelContractError
from services.classifier.server import serve
from services.classifier.settings import Settings


def main() -> int:
    configure_logging()
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        asyncio.run(serve(settings))
    except (ConfigError, ModelContractError, OSError) as bad:
        logging.getLogger("services.classifier").error("cannot start: %s", bad)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
