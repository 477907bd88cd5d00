"""The gateway's HTTP server beyond the API calls (test_gateway_http.py): body limits, product images, response
headers and the page's content policy, HTTP settings and start-up, over a real in-process gateway.

Requests go through urllib, http.client and raw sockets, like any HTTP client would send them.
"""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import replace

import pytest

from services.gateway.domain import StoredItem
from services.gateway.http.app import start_http
from services.gateway.settings import Settings as GatewaySettings
from testkit import http_api
from testkit.http_api import HOST, MAX_BODY, Http, error_of, multipart

pytestmark = pytest.mark.integration

# The shared module-scoped fixtures (one gateway for this module).
api, catalogue_dir, items, stack = http_api.api, http_api.catalogue_dir, http_api.items, http_api.stack


# ---- body limit -----------------------------------------------------------------------------------------------


def test_body_over_the_limit_is_413_from_content_length(api):
    message = error_of(*api.json("POST", "/v1/search", b"\xff" * (MAX_BODY + 1), content_type="image/jpeg"), 413)
    assert str(MAX_BODY) in message and "GATEWAY_HTTP_MAX_BODY_BYTES" in message


def test_chunked_body_over_the_limit_is_413_while_streaming(api):
    for path, content_type in (("/v1/search", "image/jpeg"), ("/v1/items", "application/json")):
        connection = http.client.HTTPConnection(HOST, api.port, timeout=30)
        connection.putrequest("POST", path)
        connection.putheader("Content-Type", content_type)
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        chunk = b"\xff" * 65536
        try:
            for _ in range(MAX_BODY // len(chunk) + 2):
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            connection.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before the rest is sent
        response = connection.getresponse()
        assert response.status == 413, path
        assert "GATEWAY_HTTP_MAX_BODY_BYTES" in json.loads(response.read())["error"]["message"]
        connection.close()


def test_multipart_body_over_the_limit_is_413_while_streaming(api):
    body, content_type = multipart({"image": b"\xff" * (MAX_BODY + 1)})
    connection = http.client.HTTPConnection(HOST, api.port, timeout=30)
    connection.putrequest("POST", "/v1/search")
    connection.putheader("Content-Type", content_type)
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    try:
        for start in range(0, len(body), 65536):
            piece = body[start : start + 65536]
            connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        connection.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = connection.getresponse()
    assert response.status == 413
    connection.close()


def test_expect_continue_is_refused_before_the_body_is_sent(api):
    with socket.create_connection((HOST, api.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            + f"Content-Length: {MAX_BODY * 4}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        head = sock.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head
    assert "GATEWAY_HTTP_MAX_BODY_BYTES" in head


# ---- product images -------------------------------------------------------------------------------------------


def test_images_are_served_from_the_image_root(api, items, catalogue_dir):
    expected = (catalogue_dir / "images" / f"{items[0].id}.jpg").read_bytes()
    # /catalogue/ is the image root; /images/ its name until version 0.1, still answered for one version.
    for prefix in ("/catalogue/", "/images/"):
        status, headers, data = api.call("GET", f"{prefix}images/{items[0].id}.jpg")
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and data == expected, prefix
    status, headers, _ = api.call("GET", f"/v1/items/{items[0].id}/image")
    assert status == 302 and headers["Location"] == f"/catalogue/images/{items[0].id}.jpg"


def test_images_outside_the_root_or_not_images_are_404(api, catalogue_dir):
    (catalogue_dir / "styles.csv").write_text("id\n1\n")
    (catalogue_dir.parent / "secret.jpg").write_bytes(b"TOP-SECRET-BYTES")
    paths = ("styles.csv", "../secret.jpg", "%2e%2e/secret.jpg", "images/1.jpg")
    for path in [prefix + path for prefix in ("/catalogue/", "/images/") for path in paths]:
        status, _, data = api.call("GET", path)
        assert status == 404, path
        assert b"TOP-SECRET-BYTES" not in data and b"id\n1" not in data


class _Stored:
    """Stands in for GatewayService: every product exists, with the image_ref given for its id."""

    def __init__(self, refs: dict[int, str]) -> None:
        self.refs = refs

    async def get(self, item_id: int) -> StoredItem:
        return StoredItem(id=item_id, payload={"image_ref": self.refs[item_id]})


def test_item_image_redirects_only_to_the_allowed_hosts(stack):
    """A catalogue writer chooses image_ref: the gateway must not send browsers to whatever host it names."""
    refs = {
        1: "https://cdn.example.com/a.jpg",
        2: "https://elsewhere.example/a.jpg",
        3: "https://elsewhere.example\\@cdn.example.com/a.jpg",  # urllib's host is cdn, a browser's elsewhere
        4: "https://cdn.example.com@elsewhere.example/a.jpg",
        5: "https://cdn.example.com.elsewhere.example/a.jpg",
        6: "//elsewhere.example/a.jpg",
        7: "images/201.jpg",
        8: "https://cdn.example.com/a.jpg\r\nSet-Cookie: x=1",
    }
    allowed = replace(stack.gateway_settings, http_port=0, image_url_hosts=("cdn.example.com",))
    for settings, redirected in ((allowed, {1: refs[1], 7: "/catalogue/images/201.jpg"}),
                                 (replace(allowed, image_url_hosts=()), {7: "/catalogue/images/201.jpg"})):  # fmt: skip
        server = stack.threads.run(start_http(settings, _Stored(refs), None))  # type: ignore[arg-type]
        try:
            client = Http(server.port)
            for item_id, ref in refs.items():
                status, headers, data = client.call("GET", f"/v1/items/{item_id}/image")
                if item_id in redirected:
                    assert (status, headers["Location"]) == (302, redirected[item_id]), ref
                else:
                    assert status == 404 and "Location" not in headers, (ref, status, headers)
                    assert "GATEWAY_IMAGE_URL_HOSTS" in json.loads(data)["error"]["message"]
                    assert client.json("GET", f"/v1/items/{item_id}")[1]["image_url"] is None
        finally:
            stack.threads.run(server.close())


def test_the_server_header_names_no_library_or_version(api, items):
    for method, path in (("GET", "/healthz"), ("GET", "/v1/stats"), ("GET", "/nope"), ("GET", "/"),
                         ("GET", "/static/app.js"), ("GET", f"/catalogue/images/{items[0].id}.jpg"),
                         ("GET", f"/v1/items/{items[0].id}/image"), ("POST", "/v1/search/by-id")):  # fmt: skip
        _, headers, _ = api.call(method, path)
        assert headers["Server"] == "fashionsearch", (path, headers["Server"])
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_the_page_may_load_scripts_and_data_only_from_the_gateway(api, stack):
    _, headers, _ = api.call("GET", "/")
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "img-src 'self' blob: data:;" in policy, policy
    settings = replace(stack.gateway_settings, http_port=0, image_url_hosts=("cdn.example.com",))
    server = stack.threads.run(start_http(settings, _Stored({}), None))  # type: ignore[arg-type]
    try:
        _, headers, _ = Http(server.port).call("GET", "/")
        assert (
            "img-src 'self' blob: data: http://cdn.example.com https://cdn.example.com;"
            in headers["Content-Security-Policy"]
        )
    finally:
        stack.threads.run(server.close())


# ---- settings -------------------------------------------------------------------------------------------------


def test_http_settings_from_env(tmp_path):
    defaults = GatewaySettings.from_env({})
    assert defaults.http_port == 8080 and defaults.http_max_body_bytes is None
    # Derived from the image limit: one 10 MiB image (+ 64 KiB of room) base64-encoded, + 64 KiB for the JSON.
    assert defaults.http_body_limit == 4 * -(-(10 * 1024 * 1024 + 65536) // 3) + 65536
    smaller = GatewaySettings.from_env({"GATEWAY_MAX_IMAGE_BYTES": "1048576"})
    assert smaller.http_body_limit < 1.5 * 1024 * 1024
    assert defaults.image_root is None
    assert GatewaySettings.from_env({"GATEWAY_HTTP_ENABLED": "false"}).http_port is None
    custom = GatewaySettings.from_env(
        {"GATEWAY_HTTP_PORT": "0", "GATEWAY_HTTP_MAX_BODY_BYTES": "4096", "GATEWAY_IMAGE_ROOT": str(tmp_path)}
    )
    assert (custom.http_port, custom.http_body_limit, custom.image_root) == (0, 4096, tmp_path)
    # A value can lower the derived limit, never raise it over what a request could use.
    assert GatewaySettings.from_env({"GATEWAY_HTTP_MAX_BODY_BYTES": str(1 << 30)}).http_body_limit == (
        defaults.http_body_limit
    )
    assert defaults.image_url_hosts == ()
    hosts = GatewaySettings.from_env({"GATEWAY_IMAGE_URL_HOSTS": "CDN.example.com, img.example.org.,"})
    assert hosts.image_url_hosts == ("cdn.example.com", "img.example.org")


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"GATEWAY_HTTP_PORT": "70000"}, "GATEWAY_HTTP_PORT"),
        ({"GATEWAY_HTTP_ENABLED": "maybe"}, "GATEWAY_HTTP_ENABLED"),
        ({"GATEWAY_HTTP_MAX_BODY_BYTES": "10"}, "GATEWAY_HTTP_MAX_BODY_BYTES"),
        ({"GATEWAY_IMAGE_ROOT": "/no/such/folder"}, "GATEWAY_IMAGE_ROOT"),
        ({"GATEWAY_IMAGE_URL_HOSTS": "https://cdn.example.com"}, "GATEWAY_IMAGE_URL_HOSTS"),
        ({"GATEWAY_IMAGE_URL_HOSTS": "cdn.example.com:8443"}, "GATEWAY_IMAGE_URL_HOSTS"),
    ],
)
def test_bad_http_settings_name_the_variable(env, fragment):
    from fashionsearch.config import ConfigError

    with pytest.raises(ConfigError, match=fragment):
        GatewaySettings.from_env(env)


def test_http_port_in_use_fails_start_with_a_clear_error(stack):
    settings = replace(stack.gateway_settings, http_port=stack.gateway_settings.http_port)
    with pytest.raises(OSError, match="cannot listen for HTTP"):
        stack.threads.run(start_http(settings, _Stored({}), None))  # type: ignore[arg-type]
