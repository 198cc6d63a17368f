"""End to end in a real browser: Playwright drives Debian's chromium (headless; never `playwright install`)
through two batches of a tiny run labelled on the page: keyboard marks, a reload in the middle that keeps
them, a mouse click and a star, then the labels in the ledger and the page noticing the run has ended.

Needs ``pip install playwright`` (the ``web`` extra) and ``apt-get install chromium``; skipped without them
(``.ci/run`` installs both)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from human_client import tiny_world_dir

from herobench.config import RunSettings, from_dict
from herobench.harness.runlog import read_jsonl
from herobench.harness.runner import execute, prepare

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install -y chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    return tiny_world_dir(tmp_path_factory)


def _ledger(run_dir: Path) -> tuple[list[list[bool]], list]:
    rows = read_jsonl(run_dir / "labels.jsonl") if (run_dir / "labels.jsonl").exists() else []
    its = [r for r in rows if r["kind"] == "iteration"]
    good = [[r["good"] for r in rows if r["kind"] == "label" and r["iteration"] == it["iteration"]] for it in its]
    return good, [it["best"] for it in its]


def _classes(page) -> list[str]:
    return page.eval_on_selector_all(
        "#grid .cell", "cs => cs.map(c => (c.classList.contains('good') ? 'good' : 'bad')"
                       " + (c.classList.contains('starred') ? '*' : ''))")


def test_two_batches_labelled_in_chromium_with_keyboard_mouse_and_a_reload(tiny_world, tmp_path):
    expect = sync_api.expect
    settings = from_dict(RunSettings, {
        "task": "hand", "method": "hero", "budget_labels": 8, "model": str(tiny_world), "batch_size": 4,
        "sampler": {"steps": 3, "guidance_scale": 2.0}, "eval": {"n_images": 4, "every_labels": 8, "batch_size": 4},
        "method_options": {"encoder_epochs": 3}, "rater": {"kind": "human"}})
    r = prepare(settings, out=tmp_path, progress=False)
    run_dir, outcome = r.dir.path, {}

    def drive():
        try:
            outcome["summary"] = execute(r)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            outcome["error"] = e

    worker = threading.Thread(target=drive, daemon=True)
    worker.start()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.set_default_timeout(30_000)
            page.goto(r.rater.url)

            # batch 1: keyboard only
            expect(page.locator("#grid .cell")).to_have_count(4)
            expect(page.locator("#status")).to_contain_text("Label batch 1")
            expect(page.locator("#budget-text")).to_have_text("labels used: 0 + 4 in this batch = 4 of 8")
            expect(page.locator("#prompt")).to_contain_text("1 hand")
            expect(page.locator("#prev-best")).to_contain_text("None yet")
            first = page.locator("#grid").get_attribute("data-batch")
            for key in ["g", "ArrowRight", "ArrowRight", "s", "ArrowRight", "Space", "b", "ArrowRight"]:
                page.keyboard.press(key)
            assert _classes(page) == ["good", "bad", "good*", "bad"]
            expect(page.locator("#counts")).to_have_text("2 good · 2 bad · best: image 3")

            page.reload()  # marks survive a reload (or closing and reopening the URL)
            expect(page.locator("#grid .cell")).to_have_count(4)
            assert _classes(page) == ["good", "bad", "good*", "bad"]
            assert not (run_dir / "labels.jsonl").exists()  # nothing recorded before the submission
            page.keyboard.press("Enter")

            # batch 2 appears by itself once batch 1 is on disk
            expect(page.locator("#status")).to_contain_text("Label batch 2", timeout=60_000)
            assert page.locator("#grid").get_attribute("data-batch") != first
            assert _ledger(run_dir) == ([[True, False, True, False]], [2])
            expect(page.locator("#budget-text")).to_have_text("labels used: 4 + 4 in this batch = 8 of 8")
            expect(page.locator("#status")).to_contain_text("Labels up to batch 1 are saved")
            expect(page.locator("#prev-img")).to_be_visible()
            page.wait_for_function("() => { const i = document.getElementById('prev-img');"
                                   " return i.complete && i.naturalWidth > 0; }")  # the picture loaded

            # batch 2: mouse, a star taken back, keyboard again
            page.locator("#grid .cell").nth(1).locator("img").click()  # good
            page.locator("#grid .cell").nth(3).locator(".star").click()  # starred (and good)
            page.keyboard.press("b")  # focus is on image 4: bad again, so no longer the best
            page.keyboard.press("1")
            page.keyboard.press("Space")  # image 1 good
            assert _classes(page) == ["good", "good", "bad", "bad"]
            expect(page.locator("#counts")).to_have_text("2 good · 2 bad · best: keep the previous")
            page.locator("#submit").click()

            worker.join(120)
            assert "error" not in outcome, outcome.get("error")
            assert outcome["summary"]["labels"] == 8
            r.close()
            expect(page.locator("#status")).to_contain_text("finished or stopped")
            browser.close()
    finally:
        r.close()
        worker.join(10)
    assert _ledger(run_dir) == ([[True, False, True, False], [True, True, False, False]], [2, None])
