"""The app in a real browser (Debian's Chromium, headless, driven by Playwright): load, distil, select a
heatmap cell, apply an edit, see the provenance grow. Screenshots of every view are saved as test
artefacts (``$INFINCOND_ARTIFACTS``, default ``artifacts/screenshots``)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download

from infincond.ui import WorldJob, build_app, launch_kwargs

from .conftest import _free_port
from .test_app import running_app

CHROMIUM = os.environ.get("INFINCOND_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
VIEWS = ["setup", "configuration", "performance", "heatmap", "shortcuts", "images", "tuning", "provenance", "share"]

playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect
pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists(),
                                reason=f"no Chromium at {CHROMIUM} (scripts/setup.sh installs it with apt-get)")


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("INFINCOND_ARTIFACTS", "artifacts")) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page_url(preset, tmp_path_factory):
    with running_app(preset, tmp_path_factory.mktemp("browser-cache")) as url:
        yield url


def test_workflow_in_a_real_browser(page_url, artifacts, tmp_path, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_alice_write_token")  # what the app reads when run locally
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(page_url)
        load, distil = (page.get_by_role("button", name="Load", exact=True),
                        page.get_by_role("button", name="Distil", exact=True))
        assert distil.is_disabled()  # nothing loaded yet
        load.click()
        expect(page.locator("#view-configuration")).to_contain_text("teacher accuracy", timeout=120_000)
        expect(page.locator("#view-configuration img").first).to_be_visible()
        expect(distil).to_be_enabled()
        distil.click()
        expect(page.locator("#view-performance")).to_contain_text("Fidelity", timeout=120_000)
        expect(page.locator("#provenance-log")).to_contain_text("distilled student", timeout=60_000)
        expect(page.locator("#view-performance canvas, #view-performance svg.marks")).to_have_count(2)  # both plots
        # ... drawn: a teacher and a student bar for each of the 6 classes, coloured by model (a plot whose first
        # value had typed columns and no rows drew them without colour), the fidelity-vs-NEC line.
        bars = page.locator("#view-performance svg.marks .mark-rect path[fill]")
        expect(bars).to_have_count(12)
        assert bars.evaluate_all("paths => new Set(paths.map(p => p.getAttribute('fill'))).size") == 2  # by model
        expect(page.locator("#view-performance svg.marks .mark-line path")).to_have_count(1)
        expect(page.locator("#groups-table")).to_contain_text(" · ", timeout=60_000)  # class x background groups
        # The shortcut audit: click its first finding; that concept and class are selected, Remove is the edit,
        # and the remove's preview names the proxies it holds.
        finding = page.locator("#audit-table [role=row]").nth(1).locator("[role=gridcell]")
        expect(finding.first).to_be_visible(timeout=60_000)
        audited_class, audited = finding.nth(0).inner_text().strip(), finding.nth(1).inner_text().strip()
        finding.nth(1).click()
        expect(page.locator("#view-tuning")).to_contain_text(f"Selected: {audited} for class {audited_class}",
                                                             timeout=60_000)
        expect(page.get_by_role("radio", name="Remove")).to_be_checked()
        expect(page.locator("#audit-gallery img").first).to_be_visible(timeout=60_000)
        page.get_by_label("Down-tune").check()  # the rest of the workflow down-tunes
        # Open the largest disagreement subset: its images appear.
        page.locator("#disagreements [role=gridcell]").first.click()
        expect(page.locator("#subset-gallery img").first).to_be_visible(timeout=60_000)
        # Click a heatmap cell: the second row's first class column selects that concept and class everywhere.
        row = page.locator("#heatmap [role=row]").nth(2)  # the header is row 0
        expect(row).to_be_visible(timeout=60_000)
        cells = row.locator("[role=gridcell]")
        concept = cells.nth(0).inner_text().strip()
        cells.nth(1).click()
        expect(page.locator("#view-tuning")).to_contain_text(f"Selected: {concept} for class", timeout=60_000)
        expect(page.locator("#view-images")).to_contain_text(f"Where {concept} is most present", timeout=60_000)
        page.locator("#concept-gallery img").first.click()
        expect(page.locator("#view-images")).to_contain_text("teacher says", timeout=60_000)
        # Preview, then apply a down-tune: the provenance log grows by one step.
        page.get_by_role("button", name="What if?", exact=True).click()
        expect(page.locator("#view-tuning")).to_contain_text("What if: down-tune", timeout=60_000)
        expect(page.locator("#view-tuning")).to_contain_text("what Apply gives", timeout=60_000)  # the refit follows
        page.get_by_role("button", name="Apply (refit)", exact=True).click()
        expect(page.locator("#provenance-log")).to_contain_text(f"down-tune '{concept}'", timeout=60_000)
        expect(page.locator("#provenance-log [role=row]")).to_have_count(3)  # header + 2 steps
        expect(page.locator("#view-provenance svg.marks .mark-line path")).to_have_count(2)  # fidelity, accuracy
        expect(page.locator("#view-tuning")).to_contain_text("Constraints in force")
        expect(page.locator("#view-tuning [role=gridcell]").first).to_have_text(concept)
        # Undo: a third step, and the constraint is gone.
        page.get_by_role("button", name="Undo", exact=True).click()
        expect(page.locator("#provenance-log [role=row]")).to_have_count(4, timeout=60_000)
        expect(page.locator("#provenance-log")).to_contain_text("undo")
        page.get_by_role("button", name="Redo", exact=True).click()  # back to the edited student, to share it
        expect(page.locator("#provenance-log [role=row]")).to_have_count(5, timeout=60_000)
        # Up-tune the weight, then restore it: the restore's unbounded constraint must not break sharing.
        page.get_by_label("Up-tune").check()
        page.get_by_role("button", name="Apply (refit)", exact=True).click()
        expect(page.locator("#provenance-log [role=row]")).to_have_count(6, timeout=60_000)
        page.get_by_label("Restore").check()
        page.get_by_role("button", name="Apply (refit)", exact=True).click()
        expect(page.locator("#provenance-log")).to_contain_text(f"restore '{concept}'", timeout=60_000)
        # Export the log; save the student to a folder, download it as a zip and push it to the (local) Hub.
        page.get_by_role("button", name="Export log", exact=True).click()
        expect(page.locator("#view-provenance")).to_contain_text("KB", timeout=60_000)  # the file link, with its size
        page.locator("#save-dir textarea, #save-dir input").first.fill(str(tmp_path / "student"))
        page.get_by_role("button", name="Save locally", exact=True).click()
        expect(page.locator("#view-share")).to_contain_text("Saved to", timeout=60_000)
        page.get_by_role("button", name="Download as zip", exact=True).click()
        expect(page.locator("#student-zip")).to_contain_text("KB", timeout=60_000)
        page.locator("#push-repo textarea, #push-repo input").first.fill("alice/browser-student")
        page.get_by_role("button", name="Push to the Hub", exact=True).click()
        expect(page.locator("#view-share")).to_contain_text("Pushed:", timeout=60_000)
        page.wait_for_timeout(1500)  # let the plots settle before the screenshots
        for view in VIEWS:
            page.locator(f"#view-{view}").screenshot(path=str(artifacts / f"{view}.png"))
        page.screenshot(path=str(artifacts / "app.png"), full_page=True)
        browser.close()
    assert {f.name for f in (tmp_path / "student").iterdir()} >= {"model.safetensors", "config.json", "tuning_log.json"}
    saved_log = json.loads((tmp_path / "student" / "tuning_log.json").read_text())
    assert saved_log["entries"][-1]["changes"][0]["lower"] is None  # the restore, saved
    pushed = json.loads(Path(hf_hub_download("alice/browser-student", "tuning_log.json", token="hf_alice_write_token",
                                             cache_dir=tmp_path / "hf")).read_text())
    assert pushed["entries"] == saved_log["entries"]
    for view in VIEWS:
        assert (artifacts / f"{view}.png").stat().st_size > 5_000


def test_the_page_opens_while_the_world_builds(world):
    """A stand-in for a slow first build: the page is served at once, shows the build's progress and keeps
    Load disabled; when the world is ready, the fields fill in and Load opens."""
    release = threading.Event()

    def slow_build(on_progress):
        for i in range(600):
            on_progress("encoder: image tower", i / 1200, 90.0)
            if release.wait(0.1):
                break
        return world

    job = WorldJob(samples=100, load=slow_build)
    demo = build_app(world=job)
    port = _free_port()
    demo.queue().launch(server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            status = page.locator("#build-status")
            expect(status).to_contain_text("Building the offline Shapes world", timeout=30_000)
            expect(status).to_contain_text("encoder: image tower")
            expect(status).to_contain_text("s left")
            load = page.get_by_role("button", name="Load", exact=True)
            assert load.is_disabled() and not job.done
            release.set()
            expect(load).to_be_enabled(timeout=30_000)
            teacher = page.get_by_label("Teacher (repo id or path)")
            expect(teacher).to_have_value(str(world.teacher), timeout=10_000)
            browser.close()
    finally:
        release.set()
        demo.close()


def test_a_long_job_that_waits_for_its_lane_shows_its_place_in_the_queue(preset, tmp_path, monkeypatch):
    """Saturated: one user's distil holds the heavy lane; another user's Distil shows Gradio's queue position
    on the page (never a silent wait or an error), then runs."""
    import re

    from infincond.ui import events
    from infincond.ui.workspace import Workspace

    monkeypatch.setattr(events, "heavy_limit", lambda cores=None: 1)
    demo = build_app({"Shapes world (offline)": preset}, cache_dir=tmp_path / "cache")
    port = _free_port()
    demo.queue(default_concurrency_limit=8).launch(server_port=port, prevent_thread_lock=True, quiet=True,
                                                    **launch_kwargs())
    hold, started, release = threading.Event(), threading.Event(), threading.Event()
    distill = Workspace.distill

    def held(self, *args, **kwargs):  # once armed, the first distil holds the lane until released
        if hold.is_set() and not started.is_set():
            started.set()
            assert release.wait(120)
        return distill(self, *args, **kwargs)

    monkeypatch.setattr(Workspace, "distill", held)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            pages = [browser.new_page(viewport={"width": 1500, "height": 1000}) for _ in range(2)]
            for page in pages:
                page.goto(f"http://127.0.0.1:{port}/")
                page.get_by_role("button", name="Load", exact=True).click()
                expect(page.locator("#view-configuration")).to_contain_text("teacher accuracy", timeout=120_000)
            hold.set()
            pages[0].get_by_role("button", name="Distil", exact=True).click()
            assert started.wait(120)
            pages[1].get_by_role("button", name="Distil", exact=True).click()
            expect(pages[1].get_by_text(re.compile(r"queue: *1/\d"))).to_be_visible(timeout=60_000)
            release.set()
            for page in pages:
                expect(page.locator("#view-performance")).to_contain_text("Fidelity", timeout=120_000)
            browser.close()
    finally:
        release.set()
        demo.close()
