"""The DevUI with real clients: the official `openai` client (with the bearer token a non-loopback bind needs)
and a real browser (Debian's Chromium driven by Playwright) on the embedded default, which runs code as-is."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys

import httpx
import openai
import pytest

from service import ROOT, clean_env, free_port, running_service

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CODE = 'print(f"six times seven is {6*7}")'  # the page shows "is 42" only if the code ran


@pytest.fixture(scope="module")
def exposed():
    """The service listening on every address (0.0.0.0) with DEVUI_AUTH_TOKEN; clients use 127.0.0.1."""
    token = secrets.token_urlsafe(32)
    with running_service(clean_env(DEVUI_AUTH_TOKEN=token), host="0.0.0.0") as (base, _, _):
        yield base, token


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
def test_openai_client_with_the_token_gets_the_output(exposed, stream):
    base, token = exposed
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0, timeout=60)
    if stream:
        with client.responses.create(model="local-code-interpreter", input=CODE, stream=True) as events:
            text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    else:
        text = client.responses.create(model="local-code-interpreter", input=CODE).output_text
    assert "six times seven is 42" in text, text


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
@pytest.mark.parametrize("key", ["", "wrong-token"], ids=["no-token", "wrong-token"])
def test_openai_client_without_the_token_is_refused(exposed, key, stream):
    base, _ = exposed
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key or "unused", max_retries=0, timeout=30,
                           default_headers={"Authorization": ""} if not key else None)
    with pytest.raises(openai.AuthenticationError) as refused:
        client.responses.create(model="local-code-interpreter", input=CODE, stream=stream)
    assert refused.value.status_code == 401
    assert httpx.post(f"{base}/v1/responses", json={"input": CODE}).status_code == 401
    assert httpx.get(f"{base}/health").status_code == 200


def test_all_addresses_without_a_token_exit_2_with_one_line():
    command = [sys.executable, "-m", "local_code_interpreter", "--devui", "--host", "0.0.0.0",
               "--port", str(free_port()), "--no-browser"]
    done = subprocess.run(command, env=clean_env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and "DEVUI_AUTH_TOKEN" in lines[0] and "0.0.0.0" in lines[0], lines


def test_browser_runs_code_on_the_embedded_default_and_shows_it_again_after_a_reload():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing (run: bash scripts/tools/browser.sh)")
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                          "(pip install -r requirements-dev.txt)").sync_playwright
    artifacts = os.path.join(ROOT, "test-artifacts")
    os.makedirs(artifacts, exist_ok=True)
    with running_service() as (base, _, _), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(base)
            box = page.locator("textarea")
            box.fill(CODE)
            box.press("Enter")
            page.get_by_text("six times seven is 42").first.wait_for(timeout=30_000)
            page.screenshot(path=os.path.join(artifacts, "devui.png"))
            page.reload()  # the page lists the conversation's items again: the exchange is still shown
            page.get_by_text("six times seven is 42").first.wait_for(timeout=30_000)
            assert page.get_by_text(CODE).count() >= 1
            page.screenshot(path=os.path.join(artifacts, "devui-reloaded.png"))
        finally:
            browser.close()
