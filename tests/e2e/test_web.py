"""The web page in a real browser: Playwright driving Debian's chromium, headless."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from devstack.stack import Stack, call_api

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path("tests/artifacts")


async def test_generate_watch_and_approve_in_the_browser(stack: Stack) -> None:
    ws = call_api("POST", f"{stack.api_url}/v1/admin/workspaces", stack.admin_token,
                  {"name": "web", "credits": 500})
    call_api("POST", f"{stack.api_url}/v1/characters", ws["api_key"],
             {"name": "Mila", "review_mode": "manual"})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = await browser.new_page(viewport={"width": 1280, "height": 1000})
        # The pages run under a Content-Security-Policy: whatever it blocks is a console
        # error, and the page would be broken where it was used.
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        answer = await page.goto(stack.api_url + "/")
        assert answer is not None
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        await page.get_by_label("API key").fill(ws["api_key"])
        await page.get_by_role("button", name="Use key").click()
        await expect(page.locator("#character option")).to_have_count(1)
        await expect(page.locator("#credits")).to_contain_text("500")

        scene = page.get_by_label("Scene description")
        await scene.fill("a woman")
        await expect(page.locator('#checklist li[data-aspect="setting"]')).to_have_attribute(
            "data-present", "false")
        await expect(page.locator("#hints li")).to_have_count(5)
        await scene.fill("Walking through a marble hotel lobby at golden hour, subtle camera "
                         "push-in, confident luxury travel energy")
        for aspect in ("setting", "action", "mood", "framing", "pacing"):
            await expect(page.locator(f'#checklist li[data-aspect="{aspect}"]')
                         ).to_have_attribute("data-present", "true")
        await page.get_by_label("Platform").select_option("tiktok")
        await expect(page.locator("#type option")).to_have_text(["short"])
        await page.locator("#duration").fill("5")
        await page.get_by_label("Quality").select_option("draft")
        await expect(page.locator("#quote")).to_have_text("Quote: 3 credits")

        await page.get_by_role("button", name="Generate video").click()
        await expect(page.locator("#card-status")).to_have_text("ready", timeout=90_000)
        await expect(page.locator("#card-progress")).to_have_attribute("value", "100")
        await expect(page.locator("#card-facts")).to_contain_text("5 s · 9:16 · 480×854")
        await expect(page.locator("#review-queue li")).to_have_count(1)
        await page.screenshot(path=str(ARTIFACTS / "web-card-ready.png"), full_page=True)

        await page.get_by_role("button", name="Approve", exact=True).click()
        await expect(page.locator("#card-status")).to_have_text("approved")
        await expect(page.locator("#review-queue li")).to_have_count(0)
        await expect(page.locator("#credits")).to_contain_text("497")
        await page.screenshot(path=str(ARTIFACTS / "web-card-approved.png"), full_page=True)

        answer = await page.goto(stack.api_url + "/docs")  # the API reference, same policy
        assert answer is not None
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        await expect(page.locator("details.op").first).to_be_visible()
        assert await page.locator("details.op").count() > 20
        assert [e for e in errors if "Content Security Policy" in e] == []
        await browser.close()
