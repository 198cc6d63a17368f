"""Regenerate ``docs/labelling-page.png``: the labelling page with a GlyphWorld batch, half labelled.

The batch is drawn by the GlyphWorld renderer from the hand task's prior (about 30 % normal hands, the rest
with missing, extra, fused or detached fingers), so no trained model is needed; the good marks and the star
follow the exact oracle, typed with the page's keys. Needs playwright and Debian's chromium::

    python docs/labelling_screenshot.py
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
from playwright.sync_api import sync_playwright

from herobench.core.images import sha256_of_image
from herobench.glyphworld import render
from herobench.harness.human import HumanRater, thumbnail_png
from herobench.oracles.glyphworld_exact import GlyphOracle
from herobench.types import RatingRequest, Verdict

OUT = Path(__file__).resolve().parent / "labelling-page.png"
N, PROMPT = 12, "1 hand"


def hands(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    arr = np.stack([render.hand.draw(render.hand.params(rng), rng) for _ in range(n)])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0


def main() -> None:
    images = hands(N, seed=4)
    best = hands(40, seed=5)
    oracle = GlyphOracle("hand")
    best = best[[v.success for v in oracle.judge(best, [PROMPT] * 40)].index(True)]
    verdicts = oracle.judge(images, [PROMPT] * N)
    with tempfile.TemporaryDirectory() as tmp, HumanRater(Path(tmp) / "human") as rater:
        best_sha = sha256_of_image(best)
        (Path(tmp) / "human" / "images").mkdir(parents=True)
        (Path(tmp) / "human" / "images" / f"{best_sha}.png").write_bytes(thumbnail_png(best))
        request = RatingRequest(images, (PROMPT,) * N, tuple(sha256_of_image(i) for i in images), iteration=3,
                                budget_labels=96, labels_spent=24, prev_best_sha256=best_sha, task="hand")
        unused = [Verdict(False, 0.0, "")] * N
        threading.Thread(target=lambda: _quiet(rater.rate, unused, "hero", request=request), daemon=True).start()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1180, "height": 640})
            page.goto(rater.url)
            page.wait_for_selector("#grid .cell >> nth=11")
            page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
            good = [i for i, v in enumerate(verdicts) if v.success]
            page.keyboard.press("1")
            for i in range(N):  # mark with the keyboard, as a person would
                if i in good:
                    page.keyboard.press("g")
                page.keyboard.press("ArrowRight")
            if good:  # star the first good one
                page.keyboard.press("1")
                for _ in range(good[0]):
                    page.keyboard.press("ArrowRight")
                page.keyboard.press("s")
            page.keyboard.press("ArrowRight")
            page.screenshot(path=str(OUT))
            browser.close()
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB; {len(good)} good of {N})")


def _quiet(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except Exception:  # noqa: BLE001 - the page is closed before anyone submits
        pass


if __name__ == "__main__":
    main()
