"""The web page in headless Debian Chromium against live services on tiny models: create an ad end to end."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from tests.conftest import REPO_ROOT
from tests.live_services import Services, unused_loopback_port
from tests.support.product_photos import cut_out_png

pytestmark = [pytest.mark.integration, pytest.mark.slow]

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
SCREENSHOT = REPO_ROOT / "test-artifacts" / "web-create-ad.png"
IMAGE_SIZE = 128
STARTUP_DEADLINE_S = 60.0
AD_DEADLINE_MS = 180_000


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


async def _wait_until_healthy(url: str, app: asyncio.subprocess.Process, log: Path) -> None:
    """Polls Streamlit's health endpoint until it answers, the process dies, or the deadline passes."""
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while not await asyncio.to_thread(_healthy, url):
        if app.returncode is not None:
            output = await asyncio.to_thread(log.read_text, errors="replace")
            pytest.fail(f"the web app exited with {app.returncode}:\n{output[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"the web app was not healthy within {STARTUP_DEADLINE_S}s")
        await asyncio.sleep(0.2)  # Poll interval, not a wait for readiness.


@pytest.fixture
async def web_app(services: Services, tmp_path: Path) -> AsyncIterator[str]:
    """`python -m adgen_web` on a free port against the live orchestrator, asking for tiny fast images."""
    port = unused_loopback_port()
    env = {
        **os.environ,
        "ADGEN_WEB_TARGET": services.orchestrator,
        "ADGEN_WEB_IMAGE_WIDTH": str(IMAGE_SIZE),
        "ADGEN_WEB_IMAGE_HEIGHT": str(IMAGE_SIZE),
        "ADGEN_WEB_NUM_INFERENCE_STEPS": "2",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "clients" / "web"), os.environ.get("PYTHONPATH", "")]),
        "HOME": str(tmp_path),  # Streamlit's per-user files land in the test's folder.
    }
    log = tmp_path / "web.log"
    with log.open("wb") as sink:
        app = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "adgen_web", "--port", str(port), env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        await _wait_until_healthy(f"http://127.0.0.1:{port}/_stcore/health", app, log)
        yield f"http://127.0.0.1:{port}/"
    finally:
        await _stop(app)


async def _stop(app: asyncio.subprocess.Process) -> None:
    """Asks the app to stop (Streamlit exits on SIGTERM), killing it if it lingers."""
    if app.returncode is not None:
        return
    app.terminate()
    try:
        await asyncio.wait_for(app.wait(), timeout=10)
    except TimeoutError:
        app.kill()
        await app.wait()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")
async def test_browser_creates_an_ad_and_shows_the_generated_image(web_app: str, tmp_path: Path) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1800},
            locale="ko-KR",
        )
        try:
            page = browser.pages[0] if browser.pages else await browser.new_page()
            await page.goto(web_app)
            await page.get_by_role("textbox", name="상품 키워드").fill("여름 느낌 딸기 생과일 주스")
            await page.get_by_role("button", name="광고 만들기").click()

            await expect(page.get_by_text("광고가 완성됐어요")).to_be_visible(timeout=AD_DEADLINE_MS)
            image = page.locator('[data-testid="stImage"] img').first
            await expect(image).to_be_visible()
            natural_width = await image.evaluate("img => img.complete ? img.naturalWidth : 0")
            assert natural_width == IMAGE_SIZE
            await expect(page.get_by_role("button", name="시안 1 이미지 받기")).to_be_visible()
            await expect(page.locator("code", has_text="#").first).to_be_visible()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)

            # The page is Korean to the browser (lang) and in Streamlit's own uploader texts, with the real limit.
            assert await page.evaluate("document.documentElement.lang") == "ko"
            await page.get_by_text("사진 편집", exact=True).click()
            # The create form (with its own product photo uploader) is gone once the edit form replaced it.
            # Streamlit drops the old form's elements only when the rerun ends, one by one, so wait for each.
            await expect(page.get_by_role("textbox", name="상품 키워드")).to_have_count(0)
            uploaders = page.locator('[data-testid="stFileUploader"]')
            await expect(uploaders).to_have_count(1)
            await expect(page.get_by_role("region", name="상품 사진 (선택", exact=False)).to_have_count(0)
            instructions = page.locator('[data-testid="stFileUploaderDropzoneInstructions"]')
            await expect(instructions).to_have_text("최대 20MB • PNG, JPG, WEBP")
            await expect(page.locator('[data-testid="stFileUploaderDropzone"] button')).to_contain_text("사진 올리기")
        finally:
            await browser.close()


PRODUCT_SCREENSHOT = REPO_ROOT / "test-artifacts" / "web-product-preview.png"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")
async def test_browser_previews_a_product_ad_in_feed_square_and_portrait_as_instagram_posts(
    web_app: str, tmp_path: Path
) -> None:
    product = tmp_path / "juice.png"
    product.write_bytes(cut_out_png())
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1800},
            locale="ko-KR",
        )
        try:
            page = browser.pages[0] if browser.pages else await browser.new_page()
            await page.goto(web_app)
            await page.get_by_role("textbox", name="상품 키워드").fill("여름 느낌 딸기 생과일 주스")
            await page.get_by_text("가게 정보 (선택)").click()
            await page.get_by_role("textbox", name="가게 이름").fill("하루카페")
            await page.get_by_text("피드 세로형 (4:5)").click()
            await page.locator('[data-testid="stForm"] input[type="file"]').set_input_files(str(product))
            await expect(page.get_by_text("juice.png")).to_be_visible()
            await page.get_by_role("button", name="광고 만들기").click()

            await expect(page.get_by_text("광고가 완성됐어요")).to_be_visible(timeout=AD_DEADLINE_MS)
            images = page.locator('[data-testid="stImage"] img')
            await expect(images).to_have_count(2)
            sizes = [
                await image.evaluate("img => [img.naturalWidth, img.naturalHeight]") for image in await images.all()
            ]
            assert sizes == [[1080, 1080], [1080, 1350]]
            # Each post in its feed frame: the shop's name above, the caption cut at the hook with "더 보기".
            await expect(page.locator(".adgen-post .name", has_text="하루카페").first).to_be_visible()
            icons = page.locator(".adgen-post .icons img")
            await expect(icons).to_have_count(8)  # Like, comment, share and save under each image.
            assert await icons.first.evaluate("img => img.complete && img.naturalWidth > 0")
            more = page.locator(".adgen-post summary").first
            await expect(more).to_contain_text("더 보기")
            hashtags = page.locator(".adgen-post .tags").first
            await expect(hashtags).to_be_hidden()
            await more.click()
            await expect(hashtags).to_be_visible()
            await expect(hashtags).to_contain_text("#")
            await expect(page.locator(".adgen-post .more").first).to_be_hidden()
            PRODUCT_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(PRODUCT_SCREENSHOT), full_page=True)
        finally:
            await browser.close()
