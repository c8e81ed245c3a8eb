"""Reusable browser fixtures: a running node, a logged-in admin page, a buyer's page, Firefox.

- ``node``: one ``pasar run --no-tor`` per test module (small pages: 3 listings).
- ``new_tab(base_url)``: a watched Chromium page with JavaScript off (harness.Tab).
- ``admin``: a Tab logged in to the node's admin through its login form.
- ``buyer(store_url)``: a Tab on a store's own listener, as a buyer sees it.
- ``firefox``: one firefox-esr (JavaScript off) for the package, over WebDriver BiDi.

Any page that asks for another host, logs a console error or fails a
sub-resource fails its test (checked when the test ends). When a test fails,
every open page is screenshotted under the test's temp dir and the paths are
added to the report.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Error, Response, sync_playwright

from ..conftest import PASSWORD, Node, make_node
from .firefox import Firefox
from .harness import VIEWPORT, Tab, launch_chromium, save

PAGE_SIZE = 3
Shooter = Callable[[], bytes]
SHOOTERS = pytest.StashKey[list[tuple[str, Shooter]]]()
SHOT_DIR = pytest.StashKey[Path]()


def _shooters(request: pytest.FixtureRequest) -> list[tuple[str, Shooter]]:
    shooters: list[tuple[str, Shooter]] = request.node.stash.setdefault(SHOOTERS, [])
    return shooters


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    shooters = item.stash.get(SHOOTERS, [])
    if report.failed and report.when in ("setup", "call") and shooters:
        folder = item.stash.get(SHOT_DIR, None) or Path(item.config.rootpath, ".screenshots")
        lines = []
        for i, (label, shoot) in enumerate(shooters):
            try:
                path = save(folder / f"failure-{report.when}-{i}-{label}.png", shoot())
                lines.append(f"{label}: {path}")
            except (Error, AssertionError, OSError, TimeoutError) as exc:
                lines.append(f"{label}: no screenshot ({exc})")
        report.sections.append(("screenshots of the failing pages", "\n".join(lines)))
        print("\nscreenshots of the failing pages:\n" + "\n".join(lines))
    return report


@pytest.fixture(scope="package")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="package")
def firefox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Firefox]:
    fx = Firefox(tmp_path_factory.mktemp("firefox"))
    try:
        yield fx
    finally:
        fx.close()
    assert not fx.recorder.seen, f"firefox-esr tried to reach other hosts: {fx.recorder.seen}"


@pytest.fixture
def firefox_page(firefox: Firefox, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Firefox]:
    """The package's Firefox, screenshotted if the test fails and checked when it ends."""
    request.node.stash[SHOT_DIR] = tmp_path
    _shooters(request).append(("firefox", firefox.screenshot))
    firefox.problems.clear()
    yield firefox
    problems, firefox.problems[:] = list(firefox.problems), []
    assert not problems, "firefox saw:\n" + "\n".join(problems)
    assert not firefox.recorder.seen, f"firefox-esr tried to reach other hosts: {firefox.recorder.seen}"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    started = make_node(tmp_path_factory.mktemp("node"))
    started.run_args = ["--no-tor", "--page-size", str(PAGE_SIZE)]
    started.start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def new_tab(chromium: Browser, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], Tab]]:
    """Factory: a watched JavaScript-off page in a fresh context (its own cookies)."""
    request.node.stash[SHOT_DIR] = tmp_path
    contexts: list[BrowserContext] = []
    tabs: list[Tab] = []

    def open_tab(base_url: str = "") -> Tab:
        context = chromium.new_context(java_script_enabled=False, base_url=base_url or None, viewport=VIEWPORT)
        context.set_default_timeout(15_000)
        contexts.append(context)
        tab = Tab(context.new_page())
        tab.attach()
        tabs.append(tab)
        _shooters(request).append((f"chromium-{len(tabs)}", tab.page.screenshot))
        return tab

    yield open_tab
    for context in contexts:
        context.close()
    problems = [p for tab in tabs for p in tab.problems]
    assert not problems, "the browser saw:\n" + "\n".join(problems)


def log_in(tab: Tab, password: str = PASSWORD, status: int = 200) -> Response:
    tab.goto("/login")
    tab.page.get_by_label("Password").fill(password)
    return tab.submit("Log in", status=status)


@pytest.fixture
def admin(node: Node, new_tab: Callable[[str], Tab]) -> Tab:
    """A Chromium page logged in to the node's admin through the login form."""
    tab = new_tab(node.admin_url)
    log_in(tab)
    assert tab.page.url == node.admin_url + "/", tab.page.url
    return tab


@pytest.fixture
def buyer(new_tab: Callable[[str], Tab]) -> Callable[[str], Tab]:
    """Factory: a buyer's page on a store's own listener (``store_url`` is its base URL)."""
    return new_tab
