"""What a user sees: a tiny sweep, evaluated and reported, then looked at in headless Chromium.

The module fixture trains 2 losses x 1 seed (1 epoch, tiny data) through the CLI with model
logging on, evaluates and reports. Checks through MLflow's client (the evaluation's test
metrics on each logged model, the report's verdict on the parent) need no browser; the
browser checks start ``mlflow ui`` on the temporary store and drive Debian's ``chromium`` with
``chromium-driver`` through selenium (offline: nothing is downloaded). Where the browser is
absent they skip, unless ``SEGLOSS_REQUIRE_BROWSER=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pytest
from conftest import wait_for_http
from helpers import runs, stage_command

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file() else None
)
LOSSES = ("bce", "bce_dice")


def _cli(repo: Path, stage: str, *args: str) -> None:
    cmd = [*stage_command(stage), *args, "print_config=false"]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{stage} failed:\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def reported(repo_root, tiny_prepared, tmp_path_factory) -> dict:
    """A tiny sweep, evaluated and reported into a temporary folder and MLflow store."""
    tmp = tmp_path_factory.mktemp("browser")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    common = [
        f"paths.prepared={tiny_prepared}",
        f"paths.models={tmp / 'models'}",
        f"paths.predictions={tmp / 'predictions'}",
        f"paths.reports={tmp / 'reports'}",
        f"tracking.uri={uri}",
        f"hydra.run.dir={tmp / 'run'}",
    ]
    _cli(
        repo_root,
        "train",
        "-m",
        f"loss={','.join(LOSSES)}",
        "seed=0",
        "train.epochs=1",
        "train.num_threads=1",
        f"hydra.sweep.dir={tmp / 'sweep'}",
        *common,
    )
    _cli(repo_root, "evaluate", *common)
    _cli(repo_root, "report", "report.dpi=40", *common)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("segloss")
    found = runs(uri)
    parent = client.get_run(next(r.id for r in found if r.parent is None))
    children = [client.get_run(r.id) for r in found if r.parent == parent.info.run_id]
    return {
        "tmp": tmp,
        "uri": uri,
        "client": client,
        "experiment_id": experiment.experiment_id,
        "parent": parent,
        "children": children,
        "verdict": json.loads((tmp / "reports" / "verdict.json").read_text()),
    }


def test_test_metrics_are_attached_to_each_logged_model_and_test_set(reported):
    client = reported["client"]
    for child in reported["children"]:
        contexts = {
            t.value: d.dataset.name
            for d in child.inputs.dataset_inputs
            for t in d.tags
            if t.key == "mlflow.data.context"
        }
        assert contexts == {
            "training": "blobs-train",
            "validation": "blobs-val",
            "testing": "blobs-test",
        }
        (model,) = client.search_logged_models(
            [reported["experiment_id"]], filter_string=f"source_run_id = '{child.info.run_id}'"
        )
        test_metrics = {m.key: m for m in model.metrics if m.key.startswith("test_")}
        assert "test_dice_per_patient" in test_metrics
        assert test_metrics["test_dice_per_patient"].dataset_name == "blobs-test"
        assert test_metrics["test_dice_per_patient"].value == pytest.approx(
            child.data.metrics["test_dice_per_patient"]
        )


def test_parent_holds_sweep_definition_report_and_verdict(reported):
    client, parent, verdict = reported["client"], reported["parent"], reported["verdict"]
    run = client.get_run(parent.info.run_id)
    assert run.data.tags["verdict"] == verdict["verdict"]
    assert run.data.tags["mlflow.note.content"] == verdict["headline"]
    assert run.data.metrics["verdict_mean_difference"] == pytest.approx(verdict["mean_difference"])
    assert run.data.metrics["verdict_ci_low"] == pytest.approx(verdict["ci"][0])
    for loss in LOSSES:
        assert f"{loss}/test_dice_per_patient" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"sweep.yaml", "report"} <= artifacts
    report = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.html", "report/verdict.json"} <= report
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="sweep.yaml", tracking_uri=reported["uri"]
    )
    definition = Path(local).read_text()
    assert "loss=bce_dice" in definition and "entry_point: pipelines/train.py" in definition
    assert run.data.tags["mlflow.source.name"] == "pipelines/train.py"


def test_overhead_outside_model_steps_is_read_from_the_sweep(reported, repo_root):
    sys.path.insert(0, str(repo_root / "benchmarks"))
    try:
        from overhead import overhead
    finally:
        sys.path.remove(str(repo_root / "benchmarks"))
    result = overhead(reported["uri"], reported["parent"].info.run_id, workers=1)
    assert result["runs"] == len(LOSSES) and result["step_seconds"] > 0
    # one job at a time: the runs fit in the sweep's wall time, so the stage share is larger
    assert 0 < result["per_run"] <= result["stage"] < 1


# --- in a real browser -------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through selenium and Debian's chromium-driver (never downloaded)."""
    missing = [
        name
        for name, found in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER))
        if not found
    ]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        if os.environ.get("SEGLOSS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required but {', '.join(missing)} not installed")
        pytest.skip(f"needs {', '.join(missing)} (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not try to download anything
    profile = tempfile.mkdtemp(prefix="segloss-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1920,1080",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_ui(reported, browser):
    """``mlflow ui`` on the sweep's store, on a free local port; its base URL."""
    port = _free_port()
    log = open(reported["tmp"] / "mlflow_ui.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            reported["uri"],
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/health", server, reported["tmp"] / "mlflow_ui.log", timeout=120)
    yield base
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


def _text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def _wait_for(driver, *needles: str, timeout: float = 60) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: all(n in _text(d) for n in needles))
    return _text(driver)


def test_mlflow_ui_shows_parent_children_datasets_and_models(reported, browser, mlflow_ui):
    from selenium.webdriver.common.by import By

    parent_name = reported["parent"].info.run_name
    child_names = sorted(c.info.run_name for c in reported["children"])
    assert child_names == ["bce (pixel) seed0", "bce_dice (batch) seed0"]
    browser.get(f"{mlflow_ui}/#/experiments/{reported['experiment_id']}/runs")
    page = _wait_for(browser, parent_name, "3 matching runs")
    assert not any(name in page for name in child_names)  # nested: collapsed under the parent
    row = browser.find_element(By.XPATH, f"//*[@role='row'][.//*[text()='{parent_name}']]")
    row.find_element(By.XPATH, ".//button").click()  # the parent's expander
    page = _wait_for(browser, *child_names)
    assert "blobs-train (" in page and "Training" in page  # the Dataset column
    assert "train.py" in page  # the Source column (mlflow.source.name)
    assert page.count("model") >= 2  # the Models column: each child's logged model

    browser.get(f"{mlflow_ui}/#/experiments/{reported['experiment_id']}/models")
    page = _wait_for(browser, "Ready", *child_names)
    assert page.count("Ready") == len(child_names)
    assert "blobs-test (" in page  # the test metrics' data set, shown on the logged models


def test_report_html_opens_offline_with_every_figure_and_the_verdict(reported, browser):
    from selenium.webdriver.common.by import By

    html = reported["tmp"] / "reports" / "report.html"
    browser.get(html.as_uri())
    images = browser.find_elements(By.TAG_NAME, "img")
    n_figures = len(list((reported["tmp"] / "reports" / "figures").glob("*.png")))
    assert len(images) == n_figures >= 8
    broken = [
        img.get_attribute("alt") or img.get_attribute("src")[:60]
        for img in images
        if not browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", img
        )
    ]
    assert not broken, f"broken images: {broken}"
    assert all(img.get_attribute("src").startswith("data:image/png") for img in images)
    headline = " ".join(reported["verdict"]["headline"].split())
    assert headline in " ".join(_text(browser).split())
