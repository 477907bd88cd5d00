"""Environment settings: typed values, bounds, addresses, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashionsearch.config import Address, ConfigError, Env, parse_addr
from services.classifier.settings import Settings as ClassifierSettings
from services.embedder.settings import Settings as EmbedderSettings


def test_defaults_when_unset_or_blank() -> None:
    env = Env("SVC_", {"SVC_BLANK": "  "})
    assert env.get_int("PORT", 7) == 7
    assert env.get_int("BLANK", 3) == 3
    assert env.get_float("T", 1.5) == 1.5
    assert env.get_str("HOST", "localhost") == "localhost"
    assert env.get_bool("FLAG", True) is True


def test_values_are_parsed() -> None:
    env = Env("SVC_", {"SVC_N": " 12 ", "SVC_X": "0.25", "SVC_ON": "yes", "SVC_OFF": "0", "SVC_NAME": "a"})
    assert env.get_int("N", 0) == 12
    assert env.get_float("X", 0.0) == 0.25
    assert env.get_bool("ON", False) is True
    assert env.get_bool("OFF", True) is False
    assert env.get_str("NAME") == "a"


@pytest.mark.parametrize(
    ("variables", "read", "message"),
    [
        ({"SVC_PORT": "http"}, lambda e: e.port("PORT", 1), r"SVC_PORT='http': not an integer"),
        ({"SVC_PORT": "70000"}, lambda e: e.port("PORT", 1), r"SVC_PORT='70000': must be at most 65535"),
        ({"SVC_N": "-1"}, lambda e: e.get_int("N", 1, min=0), r"SVC_N='-1': must be at least 0"),
        ({"SVC_T": "fast"}, lambda e: e.get_float("T", 1.0), r"SVC_T='fast': not a number"),
        ({"SVC_T": "nan"}, lambda e: e.get_float("T", 1.0), r"SVC_T='nan': must be a finite number"),
        ({"SVC_T": "0"}, lambda e: e.get_float("T", 1.0, min=0.01), r"SVC_T='0': must be at least 0.01"),
        ({"SVC_B": "maybe"}, lambda e: e.get_bool("B", True), r"SVC_B='maybe': expected true/false"),
        ({}, lambda e: e.get_str("NEEDED"), r"SVC_NEEDED is required but not set"),
        ({}, lambda e: e.addr("PEER_ADDR"), r"SVC_PEER_ADDR is required but not set \(expected host:port\)"),
        ({"SVC_PEER_ADDR": "localhost"}, lambda e: e.addr("PEER_ADDR"), r"SVC_PEER_ADDR='localhost': expected"),
        ({"SVC_PEER_ADDR": "h:0"}, lambda e: e.addr("PEER_ADDR"), r"port must be a number from 1 to 65535"),
        ({"SVC_L": "LOUD"}, lambda e: e.choice("L", "INFO", ("INFO", "DEBUG")), r"SVC_L='LOUD': must be one of"),
        ({"SVC_DIR": "/no/such/dir"}, lambda e: e.path("DIR", ".", must_exist="dir"), r"not an existing directory"),
    ],
)
def test_errors_name_the_variable(variables: dict[str, str], read, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read(Env("SVC_", variables))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost:50051", Address("localhost", 50051)),
        ("10.0.0.7:1", Address("10.0.0.7", 1)),
        ("[::1]:50052", Address("::1", 50052)),
        (" classifier:8080 ", Address("classifier", 8080)),
    ],
)
def test_parse_addr(text: str, expected: Address) -> None:
    assert parse_addr(text) == expected


@pytest.mark.parametrize("text", ["", ":80", "host:", "host:port", "::1:80", "[::1]80", "host:65536"])
def test_parse_addr_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_addr(text)


def test_address_str_round_trips() -> None:
    assert str(Address("::1", 5)) == "[::1]:5"
    assert parse_addr(str(Address("::1", 5))) == Address("::1", 5)
    assert str(Address("embedder", 50052)) == "embedder:50052"


def test_path_default_and_value(tmp_path: Path) -> None:
    assert Env("S_", {}).path("DIR", "models/x") == Path("models/x")
    assert Env("S_", {"S_DIR": str(tmp_path)}).path("DIR", "x", must_exist="dir") == tmp_path


def test_classifier_settings_from_env(tmp_path: Path) -> None:
    settings = ClassifierSettings.from_env(
        {
            "CLASSIFIER_PORT": "0",
            "CLASSIFIER_MODEL_DIR": str(tmp_path),
            "CLASSIFIER_INTRA_OP_THREADS": "2",
            "CLASSIFIER_MAX_IMAGE_BYTES": "1000",
            "CLASSIFIER_GRACE_S": "0.5",
            "EMBEDDER_PORT": "bad, but not ours",
        }
    )
    assert settings.port == 0 and settings.model_dir == tmp_path and settings.intra_op_threads == 2
    assert settings.image_limits.max_bytes == 1000 and settings.grace_s == 0.5
    assert settings.default_top_k == 3


def test_service_settings_refuse_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CLASSIFIER_MODEL_DIR"):
        ClassifierSettings.from_env({"CLASSIFIER_MODEL_DIR": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="CLASSIFIER_DEFAULT_TOP_K='20': must be at most 10"):
        ClassifierSettings.from_env({"CLASSIFIER_MODEL_DIR": str(tmp_path), "CLASSIFIER_DEFAULT_TOP_K": "20"})
    with pytest.raises(ConfigError, match="EMBEDDER_MAX_BATCH='0': must be at least 1"):
        EmbedderSettings.from_env({"EMBEDDER_MODEL_DIR": str(tmp_path), "EMBEDDER_MAX_BATCH": "0"})
    assert EmbedderSettings.from_env({"EMBEDDER_MODEL_DIR": str(tmp_path)}).port == 50052
