"""The web UI in a real browser (Debian's Chromium through Playwright) on a live team server.

Screenshots of the main pages go to ``test-artifacts/ui/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.registry.conftest import _skip_or_fail, free_port

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STORE_ENV = ("MODELPACK_TRACKING_URI", "MODELPACK_STORE_URI", "MODELPACK_ARTIFACT_URI")
START_TIMEOUT_S = 60


def test_every_ui_file_is_in_the_wheel() -> None:
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["modelpack.teamserver"]
    package = ROOT / "modelpack" / "server"
    shipped = {path for pattern in patterns for path in package.glob(pattern)}
    left_out = [
        path.relative_to(package).as_posix()
        for path in (package / "ui").rglob("*")
        if path.is_file() and path not in shipped
    ]
    assert not left_out, f"add these to [tool.setuptools.package-data]: {left_out}"


@dataclass
class Server:
    base: str
    runs: dict[str, str]  # run id by run name


@dataclass
class Ui:
    page: Any
    errors: list[str] = field(default_factory=list)

    def goto(self, route: str) -> None:
        self.page.goto(f"/{route}")

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def assert_clean(self, allow: Callable[[str], bool] = lambda message: False) -> None:
        left = [message for message in self.errors if not allow(message)]
        assert not left, "the page logged errors:\n" + "\n".join(left)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("ui") / "home"
    env = {k: v for k, v in os.environ.items() if k not in STORE_ENV}
    env["MODELPACK_HOME"] = str(home)
    seeded = subprocess.run(
        [sys.executable, "-m", "tests.teamserver._seed", str(home)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert seeded.returncode == 0, f"seeding failed:\n{seeded.stdout}{seeded.stderr}"
    port = free_port()
    log_path = home.parent / "server.log"
    command = [sys.executable, "-m", "modelpack", "server", "--host", "127.0.0.1"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*command, "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, proc, log_path)
        yield Server(base, json.loads(seeded.stdout.strip().splitlines()[-1]))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_up(base: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/api/v1/whoami", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the server did not answer within {START_TIMEOUT_S} s:\n{log_path.read_text()}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _skip_or_fail(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("playwright is not installed (pip install playwright)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def ui(browser: Any, server: Server) -> Iterator[Ui]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=server.base)
    context.set_default_timeout(20_000)
    page = context.new_page()
    ui = Ui(page)
    page.on("console", lambda msg: ui.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda error: ui.errors.append(f"uncaught: {error}"))
    try:
        yield ui
    finally:
        context.close()


def _names(ui: Ui) -> Any:
    return ui.page.locator(".runs-table tbody tr td:nth-child(2) a")


def test_experiments_page_sorts_filters_and_selects_runs(ui: Ui, server: Server) -> None:
    from playwright.sync_api import expect

    ui.goto("#/experiments")
    expect(ui.page.locator("h1")).to_have_text("demo")
    expect(_names(ui)).to_have_text(["run-b", "run-a"])  # newest first
    header = ui.page.locator(".runs-table thead")
    for column in ("Status", "Started", "Duration", "depth", "lr", "accuracy", "loss"):
        expect(header).to_contain_text(column)
    expect(ui.page.locator(".runs-table tbody")).to_contain_text("0.1521")  # run-a's last loss

    sort_by_accuracy = ui.page.locator("th[data-col='metric:accuracy'] button")
    sort_by_accuracy.click()
    expect(_names(ui)).to_have_text(["run-a", "run-b"])
    expect(ui.page.locator("th[data-col='metric:accuracy']")).to_have_attribute(
        "aria-sort", "ascending"
    )
    sort_by_accuracy.click()
    expect(_names(ui)).to_have_text(["run-b", "run-a"])

    search = ui.page.locator(".toolbar .filter")
    search.fill("run-a")
    expect(_names(ui)).to_have_text(["run-a"])
    search.fill("lr=0.1")  # a param: run-b's lr is 0.1, run-a's 0.01
    expect(_names(ui)).to_have_text(["run-b"])
    search.fill("")
    status = ui.page.locator(".toolbar .status-filter")
    status.select_option("FAILED")
    expect(ui.page.locator(".runs-table tbody")).to_contain_text("No run matches.")
    status.select_option("")
    expect(_names(ui)).to_have_count(2)

    compare = ui.page.locator(".toolbar button.primary")
    expect(compare).to_be_disabled()
    for box in ui.page.locator(".runs-table tbody input[type=checkbox]").all():
        box.check()
    expect(compare).to_be_enabled()
    ui.shot("experiments")
    compare.click()
    expect(ui.page.locator("h1")).to_have_text("Comparing 2 runs")
    chosen = ui.page.url.split("#/compare?runs=", 1)[1].split(",")
    assert sorted(chosen) == sorted(server.runs.values())
    ui.assert_clean()


def test_run_page_draws_a_chart_per_metric(ui: Ui, server: Server) -> None:
    from playwright.sync_api import expect

    ui.goto(f"#/runs/{server.runs['run-a']}")
    expect(ui.page.locator("h1")).to_contain_text("run-a")
    for metric in ("loss", "accuracy"):
        canvas = ui.page.locator(f".chart[data-metric='{metric}'] canvas")
        expect(canvas).to_be_visible()
        box = canvas.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100
    main = ui.page.locator("main")
    expect(main).to_contain_text("0.01")  # lr
    expect(main).to_contain_text("model/modelpack.yaml")  # an artifact of the logged model
    expect(main).to_contain_text("demo-model")  # the versions registered from the run
    # A tag holding markup shows as text and adds no element.
    expect(main).to_contain_text("<b>run-a</b>")
    expect(ui.page.locator("main b")).to_have_count(0)
    ui.shot("run")
    ui.assert_clean()


def test_compare_overlays_runs_and_puts_params_side_by_side(ui: Ui, server: Server) -> None:
    from playwright.sync_api import expect

    ids = [server.runs["run-a"], server.runs["run-b"]]
    ui.goto(f"#/compare?runs={','.join(ids)}")
    expect(ui.page.locator("h1")).to_have_text("Comparing 2 runs")
    for metric in ("loss", "accuracy"):
        chart = ui.page.locator(f".chart[data-metric='{metric}']")
        expect(chart).to_have_attribute("data-series", "2")
        expect(chart.locator("canvas")).to_be_visible()
        expect(chart.locator(".u-legend .u-series .u-label")).to_have_text(
            ["step", "run-a", "run-b"]
        )
    expect(ui.page.locator(".chart")).to_have_count(2)
    params = ui.page.locator("section", has=ui.page.locator("h2", has_text="Parameters"))
    expect(params.locator("thead")).to_contain_text("run-a")
    expect(params.locator("thead")).to_contain_text("run-b")
    depth = params.locator("tbody tr", has=ui.page.locator("th", has_text="depth"))
    expect(depth.locator("td")).to_have_text(["3", "5"])
    expect(depth).to_have_class("differs")
    ui.shot("compare")
    ui.assert_clean()


def test_model_page_sets_an_alias_and_moves_a_stage(ui: Ui, server: Server) -> None:
    from playwright.sync_api import expect

    ui.goto("#/models")
    row = ui.page.locator("tr[data-model='demo-model']")
    expect(row).to_contain_text("@champion → v1")
    row.get_by_role("link", name="demo-model").click()

    expect(ui.page.locator("h1")).to_have_text("demo-model")
    expect(ui.page.locator(".versions-table tbody tr")).to_have_count(2)
    champion = ui.page.locator("tr[data-alias='champion'] .alias-version")
    expect(champion).to_have_text("v1")
    history = ui.page.locator(".history-table tbody")
    expect(history).to_contain_text("first")
    expect(history).to_contain_text("Staging")

    form = ui.page.locator("form.set-alias")
    form.locator("input[name=alias]").fill("champion")
    form.locator("select[name=version]").select_option("2")
    form.locator("button[type=submit]").click()
    expect(ui.page.locator("#banner")).to_contain_text("@champion now points to version 2")
    expect(champion).to_have_text("v2")
    answer = httpx.get(f"{server.base}/api/v1/models/demo-model/aliases/champion", timeout=10)
    assert answer.status_code == 200 and answer.json()["version"] == 2

    form = ui.page.locator("form.transition-stage")
    form.locator("select[name=version]").select_option("2")
    form.locator("select[name=stage]").select_option("Production")
    form.locator("input[name=comment]").fill("ship it")
    form.locator("button[type=submit]").click()
    expect(ui.page.locator("#banner")).to_contain_text("Version 2 moved to Production")
    expect(history.locator("tr").first).to_contain_text("ship it")
    expect(history.locator("tr").first).to_contain_text("Production")
    expect(ui.page.locator(".versions-table tr[data-version='2']")).to_contain_text("Production")
    ui.shot("model")
    ui.assert_clean()


def test_version_page_shows_signature_lineage_and_history(ui: Ui, server: Server) -> None:
    from playwright.sync_api import expect

    ui.goto("#/models/demo-model/versions/2")
    expect(ui.page.locator("h1")).to_contain_text("demo-model v2")
    inputs = ui.page.locator(".signature-inputs tbody")
    expect(inputs).to_contain_text("x")
    expect(inputs).to_contain_text("float64")
    main = ui.page.locator("main")
    expect(main.get_by_role("link", name="demo-model/1")).to_have_attribute(
        "href", "#/models/demo-model/versions/1"
    )
    expect(main.get_by_role("link", name=server.runs["run-a"])).to_be_visible()
    ui.shot("version")
    ui.assert_clean()


def test_deployments_page_loads(ui: Ui) -> None:
    from playwright.sync_api import expect

    ui.goto("#/deployments")
    expect(ui.page.locator("h1")).to_have_text("Deployments")
    expect(ui.page.locator("main")).to_contain_text("No deployments")
    ui.shot("deployments")
    ui.assert_clean()


def test_a_refused_write_asks_for_a_token_and_the_token_is_sent(ui: Ui) -> None:
    from playwright.sync_api import expect

    sent: list[str | None] = []

    def refuse(route: Any) -> None:
        sent.append(route.request.headers.get("authorization"))
        body = {"error": {"code": "permission_denied", "message": "token 'ci' has role 'read'"}}
        route.fulfill(status=403, content_type="application/json", body=json.dumps(body))

    ui.page.route("**/api/v1/models/*/aliases/*", refuse)
    ui.goto("#/models/demo-model")
    token = ui.page.locator("#token")
    token.fill("secret-token")
    token.press("Enter")
    expect(ui.page.locator(".versions-table tbody tr")).to_have_count(2)
    assert ui.page.evaluate("localStorage.getItem('modelpack.token')") == "secret-token"

    form = ui.page.locator("form.set-alias")
    form.locator("input[name=alias]").fill("blocked")
    form.locator("button[type=submit]").click()
    banner = ui.page.locator("#banner")
    expect(banner).to_contain_text("needs a token with write role")
    expect(banner).to_contain_text("token 'ci' has role 'read'")
    assert sent == ["Bearer secret-token"]
    ui.assert_clean(allow=lambda message: "status of 403" in message)
