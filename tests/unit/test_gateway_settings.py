"""Gateway settings come from GATEWAY_* variables only, and bad values fail before anything binds."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashionsearch.config import Address, ConfigError
from services.gateway.limits import Limits
from services.gateway.settings import Settings


def test_defaults():
    settings = Settings.from_env({})
    assert settings.port == 50050
    assert settings.classifier_addr == Address("localhost", 50051)
    assert settings.embedder_addr == Address("localhost", 50052)
    assert settings.qdrant_url is None and settings.collection == "catalogue"
    assert settings.default_top_k == 5 and settings.max_top_k == 100
    assert settings.max_image_bytes == 10 * 1024 * 1024


def test_settings_built_in_code_have_the_environment_defaults():
    # One source for each default: the class's, which from_env() reads (http_port and shrink_above_pixels once
    # differed); the use cases' limits are written in Limits and Settings reads them from there.
    assert Settings() == Settings.from_env({})
    assert Settings().http_port == 8080 and Settings().shrink_above_pixels == 2_000_000
    assert Limits() == Settings().limits


def test_every_variable_is_read():
    settings = Settings.from_env(
        {
            "GATEWAY_PORT": "6000",
            "GATEWAY_CLASSIFIER_ADDR": "classifier:7001",
            "GATEWAY_EMBEDDER_ADDR": "[::1]:7002",
            "GATEWAY_DATA_DIR": "/var/lib/fashionsearch",
            "GATEWAY_QDRANT_URL": "http://qdrant:6333",
            "GATEWAY_COLLECTION": "catalogue_v2",
            "GATEWAY_CLASSIFY_TIMEOUT_S": "0.5",
            "GATEWAY_EMBED_TIMEOUT_S": "0.75",
            "GATEWAY_MAX_TOP_K": "50",
            "GATEWAY_DEFAULT_TOP_K": "10",
            "GATEWAY_MAX_IMAGE_BYTES": "2048",
            "GATEWAY_UPSERT_BATCH": "8",
            "GATEWAY_HTTP_HEADER_TIMEOUT_S": "5",
            "GATEWAY_HTTP_BODY_TIMEOUT_S": "2.5",
            "GATEWAY_HTTP_BODY_MIN_RATE_BPS": "0",
            "GATEWAY_STREAM_IDLE_TIMEOUT_S": "60",
            "GATEWAY_MAX_STREAMS_PER_CONNECTION": "64",
            "GATEWAY_OUTFIT_FLIP_TEST": "false",
            "GATEWAY_PREDICTED_SUBCATEGORY_MASS": "0.8",
            "OTHER_PORT": "1",
        }
    )
    assert settings.port == 6000
    assert settings.outfit_flip_test is False and Settings().outfit_flip_test is True
    assert settings.predicted_subcategory_mass == 0.8
    assert settings.classifier_addr == Address("classifier", 7001)
    assert settings.embedder_addr == Address("::1", 7002)
    assert settings.data_dir == Path("/var/lib/fashionsearch")
    assert settings.qdrant_url == "http://qdrant:6333" and settings.collection == "catalogue_v2"
    assert settings.classify_timeout_s == 0.5 and settings.embed_timeout_s == 0.75
    assert (settings.default_top_k, settings.max_top_k) == (10, 50)
    assert settings.max_image_bytes == 2048 and settings.upsert_batch == 8
    timeouts = (settings.http_header_timeout_s, settings.http_body_timeout_s, settings.stream_idle_timeout_s)
    assert timeouts == (5, 2.5, 60) and settings.max_streams_per_connection == 64
    assert settings.http_body_min_rate_bps == 0 and Settings().http_body_min_rate_bps == 500


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GATEWAY_PORT": "http"}, "GATEWAY_PORT"),
        ({"GATEWAY_CLASSIFIER_ADDR": "classifier"}, "GATEWAY_CLASSIFIER_ADDR"),
        ({"GATEWAY_EMBED_TIMEOUT_S": "-1"}, "GATEWAY_EMBED_TIMEOUT_S"),
        ({"GATEWAY_QDRANT_URL": "qdrant:6333"}, "GATEWAY_QDRANT_URL"),
        ({"GATEWAY_COLLECTION": "../x"}, "GATEWAY_COLLECTION"),
        ({"GATEWAY_MAX_TOP_K": "0"}, "GATEWAY_MAX_TOP_K"),
        ({"GATEWAY_DEFAULT_TOP_K": "20", "GATEWAY_MAX_TOP_K": "10"}, "GATEWAY_DEFAULT_TOP_K"),
        ({"GATEWAY_LOG_LEVEL": "LOUD"}, "GATEWAY_LOG_LEVEL"),
        ({"GATEWAY_HTTP_BODY_TIMEOUT_S": "0"}, "GATEWAY_HTTP_BODY_TIMEOUT_S"),
        ({"GATEWAY_PREDICTED_SUBCATEGORY_MASS": "1.5"}, "GATEWAY_PREDICTED_SUBCATEGORY_MASS"),
    ],
)
def test_bad_values_name_the_variable(environ, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environ)


def test_the_qdrant_api_key_comes_from_a_file_and_is_never_printed(tmp_path: Path):
    key_file = tmp_path / "api-key"
    key_file.write_text("s3cret-qdrant-key-0123456789\n")
    settings = Settings.from_env(
        {"GATEWAY_QDRANT_URL": "http://qdrant:6333", "GATEWAY_QDRANT_API_KEY_FILE": str(key_file)}
    )
    assert settings.qdrant_api_key == "s3cret-qdrant-key-0123456789"
    assert "s3cret" not in repr(settings)
    assert Settings.from_env({}).qdrant_api_key is None
    with pytest.raises(ConfigError, match="GATEWAY_QDRANT_API_KEY_FILE"):
        Settings.from_env({"GATEWAY_QDRANT_API_KEY_FILE": str(tmp_path / "missing")})
    key_file.write_text("\n")
    with pytest.raises(ConfigError, match="GATEWAY_QDRANT_API_KEY_FILE.*empty"):
        Settings.from_env({"GATEWAY_QDRANT_API_KEY_FILE": str(key_file)})


def test_the_store_reserve_is_read_in_mib():
    assert Settings.from_env({}).store_min_free_mb == 64
    assert Settings.from_env({"GATEWAY_STORE_MIN_FREE_MB": "0"}).store_min_free_mb == 0
    with pytest.raises(ConfigError, match="GATEWAY_STORE_MIN_FREE_MB"):
        Settings.from_env({"GATEWAY_STORE_MIN_FREE_MB": "-1"})
