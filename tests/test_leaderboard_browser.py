"""leaderboard.html opened from a file in a real headless Chromium: it renders, headers sort, plots load."""

from __future__ import annotations

from synthetic_records import metric, write_eval, write_run
from test_labelling_browser import chromium  # noqa: F401 - the fixture that finds Chromium and Playwright
from vlmbench.results.leaderboard import build, write
from vlmbench.results.store import ResultsIndex


def test_the_page_renders_sorts_and_shows_its_plots_offline(chromium, tmp_path):  # noqa: F811
    executable, playwright = chromium
    epic = {"clip-vit-b32": 0.5, "clip-vit-l14": 0.2, "clip-vit-h14": 0.35}
    models = {"clip-vit-b32": "ViT-B-32", "clip-vit-l14": "ViT-L-14", "clip-vit-h14": "ViT-H-14"}
    for judge, value in epic.items():
        write_eval(tmp_path, "cartpole-upright", judge, 0, {"epic_goal_distance": metric(value, value - 0.1, value + 0.1),
                                                            "identical_pair_bias": metric(value - 0.3)},
                   model=models[judge])
        write_run(tmp_path, "cartpole-upright", judge, 0, [True, value < 0.4])
    entries, skipped = ResultsIndex(tmp_path).refresh()
    page_file = next(p for p in write(build(entries, skipped), tmp_path / "board") if p.name == "leaderboard.html")

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(page_file.as_uri())
            table = page.locator("section", has=page.locator("h2", has_text="cartpole-upright")).locator("table")
            judges = lambda: table.locator("tbody tr td:first-child").all_inner_texts()  # noqa: E731
            assert judges() == ["clip-vit-b32", "clip-vit-h14", "clip-vit-l14"]
            header = table.locator("th", has_text="EPIC distance")
            header.click()
            assert header.get_attribute("aria-sort") == "ascending"
            assert judges() == ["clip-vit-l14", "clip-vit-h14", "clip-vit-b32"]
            header.click()
            assert header.get_attribute("aria-sort") == "descending"
            assert judges() == ["clip-vit-b32", "clip-vit-h14", "clip-vit-l14"]
            images = page.locator("#plots img")
            assert images.count() == 3
            widths = images.evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            assert all(w > 0 for w in widths), widths
            assert errors == []
        finally:
            browser.close()
