"""Browser test: the real ComfyUI frontend in headless Chromium, with the pack's web extension.

Loads every workflow (no missing nodes), changes a keep ratio on the FastSTAR node and
checks that the chart follows, runs a graph from the page and reads the sampler's
statistics, and takes a screenshot. Needs COMFYUI_PATH, Debian's chromium and
chromium-driver, and selenium (scripts/setup_comfyui_host.sh --browser installs them).
Set FASTSTAR_UPDATE_SCREENSHOT=1 to also write docs/images/faststar_workflow.png.
"""

import json
import os
import shutil

import pytest

from . import harness

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WORKFLOWS = sorted((harness.REPO_ROOT / "workflows").glob("*.json"))
SCREENSHOT = harness.REPO_ROOT / "docs" / "images" / "faststar_workflow.png"
PAGE_TIMEOUT_S = 120
RUN_TIMEOUT_S = 240
QUIET_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False}


def browser_skip_reason() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: run scripts/setup_comfyui_host.sh --browser"
    if not CHROMIUM or not CHROMEDRIVER:
        return "chromium or chromedriver not found: run scripts/setup_comfyui_host.sh --browser (Debian packages)"
    return None


@pytest.fixture(scope="module")
def page(host, tmp_path_factory):
    """A headless Chromium page with the ComfyUI editor loaded and the pack's extension registered."""
    reason = browser_skip_reason()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", "--window-size=1600,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    # First-run dialogs would cover the canvas in the screenshot. The missing-model warning is
    # turned off because the examples name the released files, which the test server lacks.
    for setting, value in QUIET_SETTINGS.items():
        host.server.request(f"/settings/{setting}", value)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(RUN_TIMEOUT_S)
    try:
        driver.get(host.server.url)
        WebDriverWait(driver, PAGE_TIMEOUT_S).until(lambda d: d.execute_script(
            "return !!(window.app && window.app.graph && window.LiteGraph"
            " && LiteGraph.registered_node_types['InfinityStarFastSTAR']"
            " && app.extensions.some(e => e.name === 'faststar.comfyui'))"))
        yield driver
    finally:
        driver.quit()


def load_workflow(driver, path) -> None:
    workflow = json.loads(path.read_text())
    driver.execute_async_script(
        "const [workflow, done] = arguments; app.loadGraphData(workflow).then(() => done(true));", workflow)


def wait_for(driver, script: str, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


FASTSTAR_NODE = "app.graph._nodes.find(n => n.comfyClass === 'InfinityStarFastSTAR')"
CHART_STATE = (f"const n = {FASTSTAR_NODE}; const c = n && n.faststarChart;"
               " return c && c.updates > 0 && !c.error ? {updates: c.updates, speedup: c.speedup,"
               " keep: c.keepRatios, preset: n.widgets.find(w => w.name === 'preset').value} : null;")


@pytest.mark.parametrize("path", WORKFLOWS, ids=[path.stem for path in WORKFLOWS])
def test_workflow_loads_without_missing_nodes(page, path):
    load_workflow(page, path)
    missing = page.execute_script(
        "return app.graph._nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type);")
    count = page.execute_script("return app.graph._nodes.length;")
    assert missing == []
    assert count == len(json.loads(path.read_text())["nodes"])


def test_keep_ratio_change_updates_chart(page, tmp_path):
    load_workflow(page, harness.REPO_ROOT / "workflows" / "text_to_video_720p.json")
    before = wait_for(page, CHART_STATE)
    assert before["preset"] == "balanced"
    assert before["speedup"] > 1.0

    page.execute_script(
        f"const n = {FASTSTAR_NODE}; const w = n.widgets.find(w => w.name === 'keep_ratio_last');"
        " w.value = 0.1; w.callback(w.value);")
    after = wait_for(page, CHART_STATE.replace("c.updates > 0", f"c.updates > {before['updates']}"))
    assert after["preset"] == "custom"
    assert after["speedup"] > before["speedup"]
    assert min(after["keep"]) == pytest.approx(0.1, abs=0.01)
    assert min(before["keep"]) == pytest.approx(0.4, abs=0.01)

    page.execute_script("app.canvas.ds.scale = 0.62; app.canvas.ds.offset = [30, 40]; app.graph.setDirtyCanvas(true, true);")
    page.execute_script("return new Promise(r => setTimeout(r, 500));")
    shot = tmp_path / "faststar_workflow.png"
    page.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("FASTSTAR_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOT)


def test_sampler_shows_run_statistics(page, host):
    load_workflow(page, harness.REPO_ROOT / "workflows" / "text_to_video_720p.json")
    names = {"InfinityStarModelLoader": {"model_name": host.model},
             "InfinityStarVAELoader": {"vae_name": host.vae},
             "InfinityStarTextEncoderLoader": {"text_encoder_name": host.text_encoder},
             "InfinityStarSampler": {"resolution": "auto", "frames": 17, "seed": 2024}}
    page.execute_script(
        "const names = arguments[0];"
        "for (const n of app.graph._nodes) { for (const [k, v] of Object.entries(names[n.comfyClass] || {})) {"
        "  const w = n.widgets.find(w => w.name === k); w.value = v; } }", names)
    page.execute_script("app.queuePrompt(0, 1);")
    text = wait_for(page, "const n = app.graph._nodes.find(n => n.comfyClass === 'InfinityStarSampler');"
                          " return n.faststarStats ? n.faststarStatsDisplay.textContent : null;", RUN_TIMEOUT_S)
    assert "tokens refined" in text
    assert "est. speedup" in text
    assert "pruning partial" in text
