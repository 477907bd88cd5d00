"""Outfit search through the services as separate processes (tiny models; the tiny detector finds coloured squares):
gRPC SearchOutfit, POST /v1/search/outfit, and the web page in headless Chromium drawing the boxes.

OUTFIT_PAGE_SCREENSHOT=<file.png> also saves the page's screenshot there.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc
from testkit.catalogue_items import catalogue_item, styles_rows
from testkit.process_stack import REPO_ROOT, ProcessStack, free_port
from testkit.tiny_detector import SHOES_COLOUR, TOP_COLOUR, photo_of_squares

pytestmark = pytest.mark.e2e

SAMPLE = REPO_ROOT / "sample_catalogue"
CHROMIUM = Path("/usr/bin/chromium")
#: The tiny classifier's subCategory labels: each gets products, so every product found has similar ones.
SUBCATEGORIES = ("Topwear", "Bottomwear", "Shoes", "Watches", "Bags")
#: 4x the tiny detector's 96x128 input: squares of 96 pixels at multiples of 32 come back exactly.
OUTFIT = photo_of_squares((384, 512), [(64, 96, 96, TOP_COLOUR), (224, 352, 96, SHOES_COLOUR)], image_format="JPEG")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[ProcessStack]:
    if not (SAMPLE / "styles.csv").is_file():
        pytest.skip(f"{SAMPLE} is missing")
    http_port = free_port()
    running = ProcessStack(
        tmp_path_factory.mktemp("outfit-e2e"),
        gateway_env={
            "GATEWAY_HTTP_ENABLED": "true",
            "GATEWAY_HTTP_PORT": str(http_port),
            "GATEWAY_IMAGE_ROOT": str(SAMPLE),
            "GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true",
            # This test is about the answers, not latency, and the CPUs may be busy.
            "GATEWAY_CLASSIFY_TIMEOUT_S": "30",
            "GATEWAY_EMBED_TIMEOUT_S": "30",
            "GATEWAY_DETECT_TIMEOUT_S": "30",
        },
        http_port=http_port,
        detector=True,
    )
    try:
        running.start()
        every = styles_rows(SAMPLE)
        rows = [r for sub in SUBCATEGORIES for r in [r for r in every if r["subCategory"] == sub][:8]]
        with grpc.insecure_channel(running.address("gateway")) as channel:
            requests = (gateway_pb2.UpsertItemsRequest(item=catalogue_item(SAMPLE, r)) for r in rows)
            replies = list(gateway_pb2_grpc.GatewayStub(channel).UpsertItems(requests, timeout=300))
        assert all(r.upserted for r in replies)
        yield running
    finally:
        running.stop()


def test_search_outfit_over_grpc_and_http_through_the_processes(stack):
    with grpc.insecure_channel(stack.address("gateway")) as channel:
        reply = gateway_pb2_grpc.GatewayStub(channel).SearchOutfit(
            gateway_pb2.SearchOutfitRequest(image=OUTFIT, top_k=3), timeout=60
        )
    assert sorted((i.group, round(i.box.left), round(i.box.top)) for i in reply.items) == [
        ("shoes", 224, 352),
        ("top", 64, 96),
    ]
    assert reply.detector_model.name == "tiny-detector" and all(len(i.hits) == 3 for i in reply.items)
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.http_port}/v1/search/outfit?top_k=3",
        data=OUTFIT,
        headers={"Content-Type": "image/jpeg"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert set(body) == {"items"}
    assert [(i["group"], i["box"]) for i in body["items"]] == [
        (i.group, {"left": round(i.box.left), "top": round(i.box.top), "width": 96, "height": 96}) for i in reply.items
    ]


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (Debian's chromium package)")
def test_the_page_draws_a_box_per_product_and_shows_the_clicked_ones_results(stack, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    photo = tmp_path / "outfit.jpg"
    photo.write_bytes(OUTFIT)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"http://127.0.0.1:{stack.http_port}/")
            page.check('input[name="find"][value="outfit"]')
            page.set_input_files("#file", str(photo))
            page.wait_for_function(
                "() => document.querySelectorAll('#boxes .box').length === 2"
                " && !document.body.classList.contains('busy')",
                timeout=60000,
            )
            boxes = page.locator("#boxes .box")
            assert "selected" in (boxes.nth(0).get_attribute("class") or "")
            # The boxes sit where the squares are: the image is shown at its own size here (384 wide < the panel).
            image = page.locator("#outfit-img").bounding_box()
            second = boxes.nth(1).bounding_box()
            assert image is not None and second is not None
            scale = image["width"] / 384
            found = (second["x"] - image["x"], second["y"] - image["y"])
            assert abs(found[0] - 224 * scale) < 4 and abs(found[1] - 352 * scale) < 4, found
            boxes.nth(1).click()
            page.wait_for_function("() => document.querySelector('#results-title').textContent.startsWith('Product 2')")
            assert "selected" in (boxes.nth(1).get_attribute("class") or "")
            assert page.locator("#hits .hit").count() == 5
            assert page.locator("#look-in").is_hidden()
            shot = tmp_path / "outfit-page.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("OUTFIT_PAGE_SCREENSHOT"):
                shutil.copy(shot, os.environ["OUTFIT_PAGE_SCREENSHOT"])
            assert not errors, errors
        finally:
            browser.close()
