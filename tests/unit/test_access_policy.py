"""The gateway's access rule, key parsing and TLS settings, without servers."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import grpc
import pytest
from aiohttp import http_exceptions

from fashionsearch.config import ConfigError
from fashionsearch.errors import PermissionDenied, Unauthenticated
from fashionsearch.v1 import gateway_pb2
from services.gateway.security import (
    Access,
    ApiKeys,
    MalformedRequestLog,
    client_metadata,
    grpc_method_access,
    http_access,
    key_from_headers,
    log_refusal,
    parse_api_keys,
)
from services.gateway.settings import Settings

READ = "read-key-0123456789abcdef"
WRITE = "write-key-0123456789abcdef"
OTHER = "other-key-0123456789abcdef"


def test_every_gateway_method_has_an_access_level():
    access = grpc_method_access()
    service = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"]
    assert set(access) == {f"/fashionsearch.v1.Gateway/{m.name}" for m in service.methods}
    writes = {path.rsplit("/", 1)[1] for path, level in access.items() if level is Access.WRITE}
    assert writes == {"UpsertItems", "UpsertBatch", "DeleteItems"}


@pytest.mark.parametrize(
    ("keys", "presented", "access", "outcome"),
    [
        # Searches are open while no read keys are configured.
        (ApiKeys(), None, Access.READ, None),
        (ApiKeys(write=(WRITE,)), "junk", Access.READ, None),
        # With read keys, reads need a read or a write key.
        (ApiKeys(read=(READ,)), None, Access.READ, Unauthenticated),
        (ApiKeys(read=(READ,)), OTHER, Access.READ, Unauthenticated),
        (ApiKeys(read=(READ,)), READ, Access.READ, None),
        (ApiKeys(read=(READ,), write=(WRITE,)), WRITE, Access.READ, None),
        # Writes: refused when no write key exists, unless explicitly opened for local use.
        (ApiKeys(), None, Access.WRITE, PermissionDenied),
        (ApiKeys(), WRITE, Access.WRITE, PermissionDenied),
        (ApiKeys(allow_unauthenticated_writes=True), None, Access.WRITE, None),
        (ApiKeys(write=(WRITE,)), None, Access.WRITE, Unauthenticated),
        (ApiKeys(write=(WRITE,)), OTHER, Access.WRITE, Unauthenticated),
        (ApiKeys(write=(WRITE,)), WRITE[:-1], Access.WRITE, Unauthenticated),
        (ApiKeys(write=(WRITE,)), WRITE + "x", Access.WRITE, Unauthenticated),
        (ApiKeys(read=(READ,), write=(WRITE,)), READ, Access.WRITE, PermissionDenied),
        (ApiKeys(read=(READ,), write=(OTHER, WRITE)), WRITE, Access.WRITE, None),
        (ApiKeys(), None, Access.OPEN, None),
    ],
)
def test_authorize(keys, presented, access, outcome):
    if outcome is None:
        keys.authorize(presented, access)
    else:
        with pytest.raises(outcome) as raised:
            keys.authorize(presented, access)
        assert presented is None or presented not in raised.value.message


def test_refusals_carry_the_grpc_codes_and_say_what_to_do():
    with pytest.raises(Unauthenticated) as missing:
        ApiKeys(write=(WRITE,)).authorize(None, Access.WRITE)
    assert missing.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in missing.value.message
    with pytest.raises(PermissionDenied) as closed:
        ApiKeys().authorize(None, Access.WRITE)
    assert closed.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert "GATEWAY_WRITE_API_KEYS" in closed.value.message


def test_keys_never_appear_in_reprs_or_logs(caplog):
    keys = ApiKeys(read=(READ,), write=(WRITE,))
    settings = Settings(read_api_keys=(READ,), write_api_keys=(WRITE,))
    assert READ not in repr(keys) + repr(settings) and WRITE not in repr(keys) + repr(settings)
    with caplog.at_level(logging.WARNING, logger="services.gateway.security"):
        try:
            keys.authorize(OTHER, Access.WRITE)
        except Unauthenticated as error:
            log_refusal(error, "/fashionsearch.v1.Gateway/UpsertItems", "ipv4:10.0.0.1:5000", True)
    text = caplog.text
    assert "UNAUTHENTICATED" in text and "UpsertItems" in text and "10.0.0.1" in text
    assert OTHER not in text and WRITE not in text


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"authorization": f"Bearer {WRITE}"}, WRITE),
        ({"Authorization": f"bearer  {WRITE} "}, WRITE),
        ({"X-API-Key": WRITE}, WRITE),
        ({"authorization": f"Basic {WRITE}"}, None),
        ({}, None),
    ],
)
def test_key_from_headers(headers, key):
    assert key_from_headers(headers) == key
    assert key_from_headers(list(headers.items())) == key


def test_client_metadata_round_trips():
    assert key_from_headers(client_metadata(WRITE)) == WRITE
    assert client_metadata(None) == ()


@pytest.mark.parametrize(
    ("method", "path", "access"),
    [
        ("POST", "/v1/search", Access.READ),
        ("POST", "/v1/search/by-id", Access.READ),
        ("GET", "/v1/items/5", Access.READ),
        ("GET", "/v1/items", Access.READ),
        ("GET", "/v1/stats", Access.READ),
        ("POST", "/v1/items", Access.WRITE),
        ("POST", "/v1/items/delete", Access.WRITE),
        ("PUT", "/v1/items/5", Access.WRITE),
        ("DELETE", "/v1/items/5", Access.WRITE),
        ("GET", "/healthz", Access.OPEN),
        ("GET", "/openapi.json", Access.OPEN),
        ("GET", "/", Access.OPEN),
        ("GET", "/images/1.jpg", Access.OPEN),
    ],
)
def test_http_access(method, path, access):
    assert http_access(method, path) is access


def test_keys_from_variable_and_file(tmp_path):
    assert parse_api_keys("GATEWAY_WRITE_API_KEYS", "", "") == ()
    assert parse_api_keys("GATEWAY_WRITE_API_KEYS", f" {WRITE} ,{OTHER},,{WRITE}", "") == (WRITE, OTHER)
    file = tmp_path / "keys"
    file.write_text(f"# rotated 2026-11\n{WRITE}\n\n{OTHER}, {READ}\n")
    assert parse_api_keys("GATEWAY_WRITE_API_KEYS", "", str(file)) == (WRITE, OTHER, READ)


@pytest.mark.parametrize(
    ("inline", "file", "fragment"),
    [
        (WRITE, "/some/file", "not both"),
        ("short", "", "at least 16"),
        ("key with spaces inside it", "", "printable ASCII"),
        ("", "/no/such/keys/file", "GATEWAY_WRITE_API_KEYS_FILE"),
    ],
)
def test_bad_keys_are_config_errors_that_never_echo_the_key(inline, file, fragment):
    with pytest.raises(ConfigError, match=fragment) as raised:
        parse_api_keys("GATEWAY_WRITE_API_KEYS", inline, file)
    assert "GATEWAY_WRITE_API_KEYS" in str(raised.value)
    if inline and not file:
        assert inline not in str(raised.value)


def test_settings_read_keys_and_access_options():
    settings = Settings.from_env(
        {"GATEWAY_WRITE_API_KEYS": f"{WRITE},{OTHER}", "GATEWAY_READ_API_KEYS": READ, "GATEWAY_HTTP_ENABLED": "0"}
    )
    assert settings.write_api_keys == (WRITE, OTHER) and settings.read_api_keys == (READ,)
    assert settings.api_keys == ApiKeys((READ,), (WRITE, OTHER), False)
    defaults = Settings.from_env({})
    assert defaults.api_keys == ApiKeys() and defaults.tls_cert_file is None
    assert Settings.from_env({"GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true"}).allow_unauthenticated_writes
    with pytest.raises(ConfigError, match="contradicts"):
        Settings.from_env({"GATEWAY_WRITE_API_KEYS": WRITE, "GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true"})


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A throwaway localhost certificate made with the openssl command line."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
    except FileNotFoundError:
        pytest.skip("the openssl command is not installed")
    return cert, key


def test_tls_settings(tmp_path):
    cert, key = self_signed(tmp_path)
    settings = Settings.from_env({"GATEWAY_TLS_CERT_FILE": str(cert), "GATEWAY_TLS_KEY_FILE": str(key)})
    assert (settings.tls_cert_file, settings.tls_key_file) == (cert, key)
    with pytest.raises(ConfigError, match="both"):
        Settings.from_env({"GATEWAY_TLS_CERT_FILE": str(cert)})
    with pytest.raises(ConfigError, match="GATEWAY_TLS_KEY_FILE"):
        Settings.from_env({"GATEWAY_TLS_CERT_FILE": str(cert), "GATEWAY_TLS_KEY_FILE": str(tmp_path / "nope.pem")})
    with pytest.raises(ConfigError, match="cannot load"):
        Settings.from_env({"GATEWAY_TLS_CERT_FILE": str(key), "GATEWAY_TLS_KEY_FILE": str(cert)})


def test_malformed_requests_are_one_line_per_interval_without_their_bytes(caplog):
    caplog.set_level(logging.DEBUG)
    now = [100.0]
    log = MalformedRequestLog(interval_s=10.0, clock=lambda: now[0])
    bad = http_exceptions.BadHttpMessage(f"Invalid header token:\n\n  b'Authorization : Bearer {READ}'")
    for _ in range(3):
        log.exception("Error handling request from %s", "192.0.2.7", exc_info=bad)
    now[0] += 10.0
    log.debug("Error handling request from %s", "192.0.2.7", exc_info=http_exceptions.BadStatusLine(READ))
    assert [r.getMessage() for r in caplog.records] == [
        "refused a malformed HTTP request from 192.0.2.7 with 400 (BadHttpMessage)",
        "refused a malformed HTTP request from 192.0.2.7 with 400 (BadStatusLine); 2 more not logged since the last"
        " such line",
    ]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in caplog.records)
    assert READ not in caplog.text

    caplog.clear()
    try:
        raise RuntimeError("a handler bug")
    except RuntimeError as error:
        log.exception("Unhandled exception", exc_info=error)
    (record,) = caplog.records
    assert record.name == "aiohttp.server" and record.exc_info is not None  # other errors keep their traceback
