"""The web page at / in a real browser: headless Chromium (Debian's `chromium` package) driven by Playwright.

The three services run as separate processes (tiny ONNX models), the gateway serves a slice of the sample
catalogue with its images. Never `playwright install`: the test uses /usr/bin/chromium and skips without it.

Two knobs, for making the README's screenshot: WEB_PAGE_SCREENSHOT=<file.png> also saves the desktop screenshot
there, and WEB_PAGE_MODELS=<dir with classifier/ and embedder/> serves real models (and the whole sample catalogue)
instead of the tiny ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc
from testkit.catalogue_items import catalogue_item, styles_rows
from testkit.process_stack import REPO_ROOT, ProcessStack, free_port

pytestmark = pytest.mark.e2e

SAMPLE = REPO_ROOT / "sample_catalogue"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: The tiny classifier's subCategory labels: every one of them has products, so the default filter finds some.
SUBCATEGORIES = ("Topwear", "Bottomwear", "Shoes", "Watches", "Bags")
PER_SUBCATEGORY = 8

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y --no-install-recommends chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements/dev.txt)")


def _catalogue(everything: bool) -> list[dict[str, str]]:
    rows = styles_rows(SAMPLE)
    if everything:
        return rows
    picked: list[dict[str, str]] = []
    for sub in SUBCATEGORIES:
        picked.extend([r for r in rows if r["subCategory"] == sub][:PER_SUBCATEGORY])
    return picked


def _wait_http(url: str, stack: ProcessStack, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, process in stack.processes.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{stack.log(name).read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} not ready after {timeout_s} s")


READ_KEY = "page-read-key-0123456789abcdef"


def _serve(folder: Path, **gateway_env: str) -> Iterator[str]:
    """The three services with the sample catalogue slice indexed; yields the page's base URL."""
    if not (SAMPLE / "styles.csv").is_file():
        pytest.skip(f"{SAMPLE} is missing")
    models = os.environ.get("WEB_PAGE_MODELS")
    http_port = free_port()
    stack = ProcessStack(
        folder,
        gateway_env={
            "GATEWAY_HTTP_ENABLED": "true",
            "GATEWAY_HTTP_PORT": str(http_port),
            "GATEWAY_IMAGE_ROOT": str(SAMPLE),
            # Generous deadlines: this test is about the page, not latency, and CPUs may be busy.
            "GATEWAY_CLASSIFY_TIMEOUT_S": "30",
            "GATEWAY_EMBED_TIMEOUT_S": "30",
            "GATEWAY_EMBED_BATCH_TIMEOUT_S": "60",
            "GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true",
            **gateway_env,
        },
        classifier_model_dir=Path(models) / "classifier" if models else None,
        embedder_model_dir=Path(models) / "embedder" if models else None,
        text_model=True,
    )
    try:
        stack.start()
        url = f"http://127.0.0.1:{http_port}"
        _wait_http(url + "/healthz", stack)
        with grpc.insecure_channel(stack.address("gateway")) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            rows = _catalogue(everything=bool(models))
            requests = (gateway_pb2.UpsertItemsRequest(item=catalogue_item(SAMPLE, r)) for r in rows)
            replies = list(stub.UpsertItems(requests, timeout=600))
        assert all(r.upserted for r in replies), [r.error.message for r in replies if not r.upserted]
        yield url
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory) -> Iterator[str]:
    yield from _serve(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def keyed_url(tmp_path_factory) -> Iterator[str]:
    """A gateway whose searches need a read key (writes stay open, for the fixture's own indexing)."""
    yield from _serve(tmp_path_factory.mktemp("web-keyed"), GATEWAY_READ_API_KEYS=READ_KEY)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, base_url):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, device_scale_factor=1)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(base_url + "/")
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _query_image() -> Path:
    row = next(r for r in _catalogue(everything=False) if r["subCategory"] == "Topwear")
    return SAMPLE / "images" / f"{row['id']}.jpg"


def _wait_results(page, count: int = 5) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('#hits .hit').length === n && !document.body.classList.contains('busy')",
        arg=count,
        timeout=30000,
    )


def test_upload_shows_attributes_name_keywords_and_five_similar_products(page, tmp_path):
    page.set_input_files("#file", str(_query_image()))
    _wait_results(page)
    assert page.locator("#message").is_hidden()
    assert page.locator("#attributes .attribute").count() >= 3
    assert "%" in page.locator("#attributes .attr-pct").first.inner_text()
    assert page.locator("#suggested-name").inner_text().strip() not in ("", "—")
    assert page.locator("#keywords li").count() >= 1
    hits = page.locator("#hits .hit")
    for i in range(5):
        card = hits.nth(i)
        assert card.locator(".hit-name").inner_text().strip()
        assert "distance" in card.locator(".hit-distance").inner_text()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#hits img')].every(img => img.complete && img.naturalWidth > 0)"
    )
    assert page.locator("#hits img").count() == 5, "every product has a thumbnail"
    page.wait_for_function("() => document.getElementById('stats').textContent.includes('products')")
    footer = page.locator("#stats").inner_text()
    assert re.fullmatch(r"[\d,]+ products · \S+@\S+ · \S+@\S+", footer), footer  # count, embedder, classifier
    shot = tmp_path / "web-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("WEB_PAGE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["WEB_PAGE_SCREENSHOT"])
    if not os.environ.get("WEB_PAGE_MODELS"):  # the tiny classifier has a subCategory head; a real one may not
        assert "subCategory" in page.locator("#applied").inner_text()


def test_a_bad_file_gets_a_clear_message(page, tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_bytes(b"%PDF-1.7 this is a document, not a photo" * 10)
    page.set_input_files("#file", str(fake))
    message = page.locator("#message")
    message.wait_for(state="visible")
    assert "“holiday.jpg” could not be used" in message.inner_text()
    assert "not a JPEG, PNG or WebP" in message.inner_text()
    assert page.locator("#results").is_hidden()
    page.screenshot(path=str(tmp_path / "bad-file.png"))

    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    page.set_input_files("#file", str(notes))
    page.wait_for_function("() => document.getElementById('message').textContent.includes('notes.txt')")
    assert "is not an image" in message.inner_text()

    # A good photo afterwards clears the message.
    page.set_input_files("#file", str(_query_image()))
    _wait_results(page)
    assert message.is_hidden()


def test_clicking_a_result_runs_more_like_this(page):
    page.set_input_files("#file", str(_query_image()))
    _wait_results(page)
    first = page.locator("#hits .hit").first
    name = first.locator(".hit-name").inner_text()
    clicked_id = first.locator(".hit-distance").inner_text().split("#")[-1]
    first.click()
    page.wait_for_function("() => document.getElementById('similar-title').textContent.startsWith('More like')")
    _wait_results(page)
    assert name[:20] in page.locator("#similar-title").inner_text()
    assert page.locator("#about-photo").is_hidden()
    ids = [t.split("#")[-1] for t in page.locator("#hits .hit-distance").all_inner_texts()]
    assert clicked_id not in ids, "the product itself is not among its similar products"
    page.locator("#back").click()
    assert page.locator("#about-photo").is_visible()


def test_filter_choices(page):
    page.set_input_files("#file", str(_query_image()))
    _wait_results(page)
    page.locator('input[name="mode"][value="none"]').check()
    page.wait_for_function("() => document.getElementById('applied').textContent.includes('whole catalogue')")
    _wait_results(page)
    options = page.locator("#category option").all()
    assert len(options) > len(SUBCATEGORIES), "the category list is loaded from the catalogue"
    page.select_option("#category", "Shoes")
    page.wait_for_function("() => document.getElementById('applied').textContent.includes('subCategory = Shoes')")
    _wait_results(page)
    assert page.locator('input[name="mode"][value="explicit"]').is_checked()


def _wait_understood(page, text: str) -> None:
    page.wait_for_function(
        "t => document.getElementById('understood').textContent.includes(t)"
        " && !document.body.classList.contains('busy')",
        arg=text,
        timeout=30000,
    )


def test_search_by_words(page):
    page.fill("#text-query", "red")
    page.locator("#text-form button").click()
    _wait_understood(page, "Colour Red")
    assert page.locator("#similar-title").inner_text() == "Products for “red”"
    # The default match (both): only the indexed red products, ranked by the text's vector.
    red = sum(r["baseColour"] == "Red" for r in _catalogue(everything=bool(os.environ.get("WEB_PAGE_MODELS"))))
    assert page.locator("#hits .hit").count() == min(5, red) > 0
    assert page.locator("#refine-form").is_hidden()

    page.fill("#text-query", "xqzt blorp")
    page.locator("#text-form button").click()
    _wait_understood(page, "Unknown words: xqzt, blorp")
    assert "None of the words" in page.locator("#understood").inner_text()
    assert page.locator("#hits .empty").is_visible()
    page.fill("#text-query", "x" * 256 + "y")  # the field stops at 256 characters: no error to show
    assert len(page.locator("#text-query").input_value()) == 256


def test_refine_a_photo_with_words(page):
    page.set_input_files("#file", str(_query_image()))
    _wait_results(page)
    assert page.locator("#refine-form").is_visible()
    page.fill("#refine-text", "red")
    page.locator("#refine-form button").click()
    _wait_understood(page, "Colour Red")
    assert "baseColour = Red" in page.locator("#applied").inner_text()
    metas = page.locator("#hits .hit-meta").all_inner_texts()
    assert all(m.endswith("Red") for m in metas), metas
    page.fill("#refine-text", "xqzt")
    page.locator("#refine-form button").click()
    message = page.locator("#message")
    message.wait_for(state="visible")
    assert "Check your words" in message.inner_text() and "none of the words" in message.inner_text()
    assert page.locator("#preview").is_visible(), "bad words do not drop the photo"


def test_paste_and_drop_an_image(page):
    data = list(_query_image().read_bytes())
    page.evaluate(
        """bytes => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], "pasted.jpg", {type: "image/jpeg"}));
            document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data, bubbles: true}));
        }""",
        data,
    )
    _wait_results(page)
    page.evaluate("() => { document.getElementById('hits').replaceChildren(); }")
    page.evaluate(
        """bytes => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], "dropped.jpg", {type: "image/jpeg"}));
            const drop = document.getElementById("drop");
            drop.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
        }""",
        data,
    )
    _wait_results(page)
    assert page.locator("#preview").get_attribute("alt") == "Your photo: dropped.jpg"


def test_works_on_a_phone_sized_screen(browser, base_url, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(base_url + "/")
        page.set_input_files("#file", str(_query_image()))
        _wait_results(page)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow} px"
        box = page.locator("#hits .hit").first.bounding_box()
        assert box is not None and box["width"] >= 120, "result cards stay readable"
        page.screenshot(path=str(tmp_path / "web-page-phone.png"), full_page=True)
    finally:
        context.close()


def test_openapi_link_serves_the_document(page, base_url):
    with urllib.request.urlopen(base_url + "/openapi.json", timeout=5) as response:
        document = json.loads(response.read())
    assert "/v1/search" in document["paths"]
    assert page.locator("footer a").get_attribute("href") == "/openapi.json"


def test_a_read_key_entered_on_the_page_is_kept_for_the_tab_only(browser, keyed_url):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))) if "/v1/" in r.url else None)
    try:
        page.goto(keyed_url + "/")
        page.locator("#key-form").wait_for(state="visible")  # the category list answered 401
        page.set_input_files("#file", str(_query_image()))
        page.wait_for_function("() => document.getElementById('message').textContent.includes('needs an API key')")

        page.fill("#key", "not-the-key-0123456789abcdef")
        page.click("#key-form button[type=submit]")
        page.wait_for_function("() => document.getElementById('message').textContent.includes('did not accept')")
        assert page.locator("#key-form").is_visible()

        page.fill("#key", READ_KEY)
        page.click("#key-form button[type=submit]")
        _wait_results(page)  # the photo is searched again, with the key
        assert page.locator("#key-form").is_hidden() and page.locator("#key-in-use").is_visible()
        page.wait_for_function("() => document.querySelectorAll('#category option').length > 2")
        page.wait_for_function("() => document.getElementById('stats').textContent.includes('products')")
        searches = [header for url, header in sent if "/v1/search" in url]
        assert searches[-1] == f"Bearer {READ_KEY}" and searches[0] is None
        assert not any(READ_KEY in url for url, _ in sent), "the key never goes into a URL"
        kept = page.evaluate(
            "() => [sessionStorage.getItem('fashionsearch.apiKey'), localStorage.length, document.cookie]"
        )
        assert kept == [READ_KEY, 0, ""]

        page.reload()  # the same tab keeps it
        page.locator("#key-in-use").wait_for(state="visible")
        page.wait_for_function("() => document.querySelectorAll('#category option').length > 2")
        other = context.new_page()  # another tab does not
        other.goto(keyed_url + "/")
        other.locator("#key-form").wait_for(state="visible")
        assert other.evaluate("() => sessionStorage.length") == 0

        page.click("#forget-key")
        page.locator("#key-form").wait_for(state="visible")
        assert page.evaluate("() => sessionStorage.length") == 0
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
