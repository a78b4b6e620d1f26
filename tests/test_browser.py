"""The MLflow UI as a user sees it, in a real browser: Debian's Chromium driven by Playwright.

Example: RNNBENCH_SCREENSHOTS=/tmp/shots pytest -m browser tests/test_browser.py

A tiny store (a 2-trial addition study, one plain train run and the champion the study registers) is served by
``rnnbench ui`` on a free loopback port, and each page is checked for what a user comes to it for. Screenshots go
to ``$RNNBENCH_SCREENSHOTS`` (default: the test's temporary folder). The test skips where Playwright or a Chromium
binary is missing, unless ``RNNBENCH_REQUIRE_BROWSER=1`` (set by .ci/run), where that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_tuning import study_file

from benchmark import cli
from benchmark.schema import Role, Tag
from benchmark.store import client_for

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.browser


def chromium_or_skip() -> str:
    binary = os.environ.get("RNNBENCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        binary = None
    if binary:
        return binary
    if os.environ.get("RNNBENCH_REQUIRE_BROWSER") == "1":
        pytest.fail("the browser test needs playwright (pip install -e '.[test]') and Chromium (apt-get install "
                    "chromium, or RNNBENCH_CHROMIUM=/path/to/chrome)")
    pytest.skip("no playwright or no Chromium binary")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"rnnbench ui exited with {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert cli.main(["tune", study_file(tmp_path, epochs=2, train_size=100), "--arch", "lstm", "--trials", "2",
                     "--tracking-uri", uri, "--quiet"]) == 0
    assert cli.main(["train", "--task", "addition", "--arch", "gru", "--hidden-size", "8", "--epochs", "2",
                     "--train-size", "100", "--max-train-length", "6", "--eval-lengths", "9", "--tracking-uri", uri,
                     "--quiet"]) == 0
    return uri


def test_the_mlflow_ui_shows_studies_trials_curves_artifacts_and_the_champion(store, tmp_path):
    chromium = chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    client = client_for(store)
    (experiment,) = [e for e in client.search_experiments() if e.name == "addition"]
    runs = client.search_runs([experiment.experiment_id])
    (study,) = [r for r in runs if r.data.tags.get(Tag.ROLE) == Role.STUDY]
    trials = sorted((r for r in runs if r.data.tags.get(Tag.ROLE) == Role.TRIAL), key=lambda r: r.info.start_time)
    assert len(trials) == 2
    (plain,) = [r for r in runs if r.data.tags.get(Tag.ROLE) == Role.RUN]
    (champion,) = client.search_registered_models()
    shots = Path(os.environ.get("RNNBENCH_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)

    port = free_port()
    log = (tmp_path / "ui.log").open("w")  # a file, not a pipe: a full pipe would stall the server mid-test
    ui = subprocess.Popen([sys.executable, "-m", "benchmark", "ui", "--port", str(port), "--tracking-uri", store],
                          cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/", ui)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)

            # MLflow 3.17's UI starts in its GenAI view whatever the experiment's kind; one click on "Model
            # training" is remembered by the browser (docs/training.md says so). The Assistant panel opens on a
            # first visit: closed, as a user would, so the screenshots show the page.
            page.goto(f"{base}/#/experiments")
            page.get_by_text("Model training", exact=True).click()
            close = page.get_by_role("button", name="Close")
            if close.count():
                close.first.click()
            # The experiment opens on its runs: the study parent, and its trials nested under it.
            page.goto(f"{base}/#/experiments/{experiment.experiment_id}")
            expect(page).to_have_url(re.compile(r"/runs\b"))
            expect(page.get_by_text(study.info.run_name, exact=True).first).to_be_visible()
            page.locator("button[data-component-id*='runnamecellrenderer']").first.click()
            for trial in trials:
                expect(page.get_by_text(trial.info.run_name, exact=True).first).to_be_visible()
            page.screenshot(path=shots / "1-study-with-nested-trials.png")

            # A trial's parameters, as the study chose them.
            best = trials[-1]
            page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs/{best.info.run_id}")
            expect(page.get_by_text("Parameters").first).to_be_visible()
            hidden_row = page.get_by_role("row").filter(has=page.get_by_text("hidden_size", exact=True)).first
            expect(hidden_row).to_contain_text(best.data.params["hidden_size"])
            page.screenshot(path=shots / "2-trial-params.png", full_page=True)

            # Accuracy by length, with the length as the step: ticks up to the longest length evaluated.
            page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs/{best.info.run_id}/model-metrics")
            page.get_by_placeholder("Search metric charts").fill("test_bit_acc_by_len")
            card = page.locator("div", has=page.get_by_text("test_bit_acc_by_len", exact=True)).filter(
                has=page.locator(".xtick")).last
            expect(card).to_be_visible()
            longest = max(m.step for m in client.get_metric_history(best.info.run_id, "test_bit_acc_by_len"))
            assert longest == max(int(n) for n in best.data.params["eval_lengths"].split(","))
            # Plotly redraws the chart after the search filters it: wait for drawn ticks before reading them.
            expect(card).to_contain_text("Step")
            expect(card.locator(".xtick text").first).to_have_text(re.compile(r"\d"))
            ticks = [float(t) for t in card.locator(".xtick text").all_text_contents() if t and t.strip()]
            assert ticks and min(ticks) >= 1 and longest / 2 < max(ticks) <= longest  # lengths, not epochs
            page.screenshot(path=shots / "3-accuracy-by-length.png")

            # A search trial keeps its checkpoint (register and confirm read it) but draws no curves; the plain
            # train run has both, and its learning curve opens as a picture.
            page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs/{best.info.run_id}/artifacts")
            expect(page.get_by_text("checkpoint", exact=True).first).to_be_visible()
            assert not client.list_artifacts(best.info.run_id, "curves")
            page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs/{plain.info.run_id}/artifacts")
            for folder in ("checkpoint", "curves"):
                expect(page.get_by_text(folder, exact=True).first).to_be_visible()
            page.get_by_text("curves", exact=True).first.click()
            (curve_file,) = [a.path for a in client.list_artifacts(plain.info.run_id, "curves")]
            curve = page.get_by_text(Path(curve_file).name, exact=True).first
            expect(curve).to_be_visible()
            curve.click()
            expect(page.locator("img[src^='blob:']").first).to_be_visible()  # the PNG, fetched and drawn
            page.screenshot(path=shots / "4-artifacts.png")

            # The study's best, registered with the champion alias, on the Models page.
            page.goto(f"{base}/#/models")
            row = page.get_by_role("row").filter(has_text=champion.name).first
            expect(row).to_be_visible()
            expect(row).to_contain_text("champion")
            dialog = page.get_by_role("dialog")  # MLflow's one-time "new Model Registry UI" announcement
            if dialog.count():
                page.keyboard.press("Escape")
                expect(dialog).to_have_count(0)
                page.wait_for_timeout(1000)  # the backdrop fades out after the dialog
            page.screenshot(path=shots / "5-models-champion.png")
            browser.close()
    finally:
        ui.send_signal(signal.SIGTERM)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ui.kill()
            ui.wait()
        log.close()
