"""The labelling page in a real headless Chromium: arrow keys label states and pairs into SQLite."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from console import SCRIPT
from vlmbench.datasets.build import build_dataset
from vlmbench.datasets.format import save_dataset
from vlmbench.specs.catalogue import resolve_task
from vlmbench.web.dataset_labelling import draw_pairs, state_order
from vlmbench.web.labels import store_path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str | None:
    """A Chromium binary: $VLMBENCH_CHROMIUM, else the first of BROWSERS on the PATH."""
    named = os.environ.get("VLMBENCH_CHROMIUM")
    if named:
        return named
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def chromium():
    """The Chromium binary and Playwright's sync API; the test skips, saying why, without either."""
    found = _browser()
    if found is None:
        pytest.skip(f"no Chromium found (looked for {', '.join(BROWSERS)} on the PATH and $VLMBENCH_CHROMIUM); "
                    "install one, e.g. `apt-get install chromium`")
    return found, pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture
def server(tmp_path):
    """`vlmbench label` on a small dataset, serving on 127.0.0.1 at a free port."""
    task = resolve_task("cartpole-upright")
    dataset = save_dataset(build_dataset(task, n=8, goal_fraction=0.4, seed=5, trajectories=0),
                           tmp_path / "cartpole.parquet")
    port = _free_port()
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "vlmbench"]
    proc = subprocess.Popen(
        [*command, "label", "--dataset", str(dataset.path), "--handle", "ann", "--port", str(port), "--pairs", "3",
         "--labels", str(tmp_path / "labels"), "--frames", str(tmp_path / "frames")],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                pytest.fail(f"vlmbench label exited with {proc.returncode}: {proc.stdout.read()}")
            try:
                urllib.request.urlopen(url + "api/info", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("vlmbench label did not start serving within 30 s")
        yield url, dataset, store_path(dataset, tmp_path / "labels")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_arrow_keys_label_states_and_pairs_in_chromium(chromium, server, tmp_path):
    browser_path, playwright_api = chromium
    url, dataset, labels = server
    order = [row.state_id for row in state_order(dataset)]
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(url)
            count = page.locator("#count")
            playwright_api.expect(count).to_have_text(f"0 / {len(dataset.rows)} states labelled by ann")
            assert "goal" in page.locator("#keys").inner_text() and page.locator("#keys kbd").count() == 3
            for done, key in enumerate(["ArrowLeft", "ArrowRight", "ArrowDown"], start=1):
                page.keyboard.press(key)
                playwright_api.expect(count).to_have_text(f"{done} / {len(dataset.rows)} states labelled by ann")
            playwright_api.expect(page.locator("#frames img")).to_have_attribute("src", f"/frames/{order[3]}.png")
            page.wait_for_function("document.querySelector('#frames img').naturalWidth > 0")
            playwright_api.expect(page.locator("#agreement")).to_contain_text("ann and detector")
            page.screenshot(path=str(tmp_path / "states.png"))

            page.click("#tab-pair")
            playwright_api.expect(count).to_have_text("0 / 3 pairs labelled by ann")
            page.keyboard.press("ArrowRight")
            playwright_api.expect(count).to_have_text("1 / 3 pairs labelled by ann")
            page.wait_for_function("[...document.querySelectorAll('#frames img')].every(i => i.naturalWidth > 0)")
            assert page.locator("#frames img").count() == 2
            page.screenshot(path=str(tmp_path / "pairs.png"))
        finally:
            browser.close()

    with sqlite3.connect(labels) as db:
        states = db.execute("SELECT state_id, handle, value FROM state_labels ORDER BY rowid").fetchall()
        pairs = db.execute("SELECT pair, left_id, right_id, handle, value FROM pair_labels").fetchall()
    assert states == [(order[0], "ann", "goal"), (order[1], "ann", "not-goal"), (order[2], "ann", "skip")]
    left, right = draw_pairs(dataset, 3)[0]
    assert pairs == [(0, left.state_id, right.state_id, "ann", "right")]
    assert (tmp_path / "states.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
