"""Files in the DevUI, in a real browser (Debian's Chromium driven by Playwright) against the real server on the
embedded default (no model: the code in the message runs as-is) with the real subprocess sandbox sessions.

A CSV is attached in the page, the message's code reads it by name, draws a matplotlib chart (captured without
`savefig`) and writes a result file; the chart must render in the reply (an <img> that loaded: natural width > 0)
and the result file must download through the link in the reply with exactly the expected bytes. The server
listens on 127.0.0.1 with a bearer token (required then, as on any address), so the download proves the
signed link works without it, as a browser follows it.

DevUI 1.0.0b261022's paperclip (its file picker) only accepts images, PDF and audio; any other file attaches by
dropping it on the message box, which sends the same `input_file`. So the CSV is dropped, and an image goes
through the paperclip: both must land in the conversation's session directory.

Screenshots: test-artifacts/devui-files-attached.png (before sending), test-artifacts/devui-files-reply.png.
"""
from __future__ import annotations

import base64
import os
import tempfile
import secrets
import struct
import zlib

import httpx
import pytest

from service import ROOT, clean_env, running_service

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CSV = b"month,sales\njan,3\nfeb,5\nmar,4\n"
EXPECTED = b"month,sales,double\njan,3,6\nfeb,5,10\nmar,4,8\n"
CODE = """import os
import pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv("sales.csv")
df.plot(x="month", y="sales", kind="bar", title="sales by month")
df.assign(double=df.sales * 2).to_csv("doubled.csv", index=False)
pic = next(n for n in os.listdir(".") if n.startswith("image-") and n.endswith(".png"))
print(f"total sales {df.sales.sum()}; picture {os.path.getsize(pic)} bytes")"""


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    rows = b"".join(b"\0" + bytes([200, 40, 40]) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def browser_kit():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing (run: bash scripts/tools/browser.sh)")
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                          "(pip install -r requirements-dev.txt)").sync_playwright
    return sync_playwright


def drop_file(page, target, name: str, data: bytes, media_type: str) -> None:
    """Drop a file on `target` the way a person drags one from their desktop (a DataTransfer with a File)."""
    transfer = page.evaluate_handle(
        """([name, b64, type]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type}));
            return transfer;
        }""", [name, base64.b64encode(data).decode(), media_type])
    target.dispatch_event("dragover", {"dataTransfer": transfer})
    target.dispatch_event("drop", {"dataTransfer": transfer})


def test_attach_a_csv_draw_a_chart_and_download_the_result(browser_kit, tmp_path):
    token = secrets.token_urlsafe(32)
    artifacts = os.path.join(ROOT, "test-artifacts")
    os.makedirs(artifacts, exist_ok=True)
    picture = tmp_path / "picture.png"
    picture.write_bytes(tiny_png())
    env = clean_env(DEVUI_AUTH_TOKEN=token)
    log = tempfile.TemporaryFile(mode="w+")  # the service's output, shown if the page never gets its reply
    with log, running_service(env, ready_timeout=60, log=log) as (base, _, _), browser_kit() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
            context.add_init_script(f"localStorage.setItem('devui_auth_token', {token!r})")
            page = context.new_page()
            page.goto(base)
            box = page.locator("textarea")
            box.wait_for(timeout=30_000)
            page.locator("input[type=file]").first.set_input_files(str(picture))  # the paperclip
            drop_file(page, box, "sales.csv", CSV, "text/csv")
            # Both attachments must be in the message before it is sent: the paperclip reads its file
            # asynchronously, so the CSV's chip can show before the picture's thumbnail does (a clean CI run
            # once sent the message with the picture still being read; the code then found no image-*.png).
            page.get_by_text("sales.csv").first.wait_for(timeout=10_000)  # the CSV's chip
            page.locator("img[src^='data:image/png'], img[src^='blob:']").first.wait_for(timeout=10_000)
            box.fill(CODE)
            page.screenshot(path=os.path.join(artifacts, "devui-files-attached.png"))
            box.press("Enter")

            try:
                page.get_by_text("total sales 12").first.wait_for(timeout=90_000)
            except Exception:
                page.screenshot(path=os.path.join(artifacts, "devui-files-no-reply.png"), full_page=True)
                log.seek(0)
                print(f"the page shows no reply; the page's text:\n{page.inner_text('body')[-4000:]}\n"
                      f"the service's log:\n{log.read()[-6000:]}")
                raise
            saved = page.locator("p", has_text="Saved in this conversation's working directory").first
            assert "sales.csv" in saved.inner_text()
            chart = page.locator("img[src^='data:image/png']").last
            chart.wait_for(timeout=30_000)
            chart.scroll_into_view_if_needed()
            width, height = chart.evaluate("img => [img.naturalWidth, img.naturalHeight]")
            assert width > 100 and height > 100, (width, height)  # a matplotlib figure, not the 4x3 picture
            assert f"picture {len(picture.read_bytes())} bytes" in page.content()  # the paperclip's image landed
            link = page.locator("a[href*='/doubled.csv?t=']")
            link.wait_for(timeout=10_000)
            page.screenshot(path=os.path.join(artifacts, "devui-files-reply.png"), full_page=True)

            with context.expect_event("download", timeout=30_000) as downloading:
                link.click()  # the reply's link opens a new tab, which the attachment turns into a download
            download = downloading.value
            assert download.suggested_filename == "doubled.csv"
            with open(download.path(), "rb") as saved:
                assert saved.read() == EXPECTED
            # Auth is on: without the link's grant (or the token) the same path is refused.
            assert httpx.get(base + link.get_attribute("href").split("?")[0]).status_code == 401

            page.reload()  # the page lists the conversation again: the chart and the link are shown again too
            page.get_by_text("total sales 12").first.wait_for(timeout=30_000)
            page.wait_for_function("""() => [...document.querySelectorAll("img[src^='data:image/png']")]
                                       .some(img => img.naturalWidth > 100 && img.naturalHeight > 100)""",
                                   timeout=30_000)
            page.locator("a[href*='/doubled.csv?t=']").first.wait_for(timeout=10_000)
            page.screenshot(path=os.path.join(artifacts, "devui-files-reloaded.png"), full_page=True)
        finally:
            browser.close()
