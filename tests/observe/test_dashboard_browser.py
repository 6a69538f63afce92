"""``pulse-trio dashboard`` in a real browser: Debian's Chromium driven by Selenium through
Debian's chromedriver, against a live deployment this test creates.

The pages load without console errors, show the pool, stream and map, and update when a job
moves (a node leaves) or events are added. A screenshot of each page is saved under
``tests/artifacts/`` (the path is printed). Skipped, with the reason printed, when
``chromium`` or ``chromedriver`` is not installed (``.ci/run`` installs both).

The dashboard runs on Trio in its own process whatever the backend; the deployment side is
tested on both backends elsewhere, so these tests run on Trio only (they must stay fast).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from pulse_trio import pool, rmap, streaming

pytest.importorskip("selenium", reason="selenium (dev dependency) is missing")
pytest.importorskip("hypercorn", reason="the dashboard extra is missing")

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.anyio

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
#: Every wait of the browser side ends within this many seconds.
DEADLINE = 15.0


@pytest.fixture
def anyio_backend() -> str:
    """Trio only (see the module's docstring)."""
    return "trio"


def _browser_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        reason = "chromium or chromedriver not installed (apt-get install chromium chromium-driver)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return browser, driver


@pytest.fixture
def driver() -> Iterator[Any]:
    """A headless Chromium with its console log captured."""
    browser, driver_path = _browser_paths()
    options = Options()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI's container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def dashboard(url: str) -> Iterator[str]:
    """``pulse-trio dashboard`` in a child process; yields its base URL once it serves."""
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PULSE_REDIS_URL", None)
    command = [sys.executable, "-m", "pulse_trio", "dashboard", "--redis-url", url]
    command += ["--port", str(port), "--interval", "0.3"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the "serving" line, or an error and EOF
        assert "serving http://127.0.0.1:" in line, f"dashboard did not start: {line!r}"
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


async def _job(job: pool.Job, *, task_status: anyio.abc.TaskStatus[None]) -> None:
    task_status.started()
    await anyio.sleep_forever()


async def in_browser(fn: Callable[[], Any]) -> Any:
    """Run a blocking Selenium step in a thread (the deployment's tasks keep running)."""
    return await anyio.to_thread.run_sync(fn)


def wait_for(chrome: Any, condition: Callable[[Any], Any], what: str) -> Any:
    """Poll ``condition`` in the browser until it is truthy, within :data:`DEADLINE`."""
    return WebDriverWait(chrome, DEADLINE, poll_frequency=0.1).until(
        condition, message=f"not seen in the dashboard within {DEADLINE}s: {what}"
    )


def texts(chrome: Any, selector: str) -> list[str]:
    """The texts of the elements matching ``selector``, read in one script (the page
    redraws itself every second, so element handles would go stale)."""
    found: list[str] = chrome.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent)",
        selector,
    )
    return found


def attributes(chrome: Any, selector: str, name: str) -> list[str]:
    """Attribute ``name`` of the elements matching ``selector`` (one script)."""
    found: list[str] = chrome.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]),"
        " e => e.getAttribute(arguments[1]))",
        selector,
        name,
    )
    return found


def no_console_errors(chrome: Any, page: str) -> None:
    """Fail on any error the page logged (a failed request, a script error)."""
    errors = [entry for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, f"console errors on {page}: {errors}"


def screenshot(chrome: Any, name: str) -> Path:
    """Save a screenshot of the current page under tests/artifacts/ and print its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"dashboard-{name}.png"
    assert chrome.save_screenshot(str(path)), f"screenshot {path} failed"
    print(f"screenshot: {path}")
    return path


async def test_dashboard_pages_show_and_follow_a_live_deployment(
    server_url: str, client: Any, unique: str, driver: Any
) -> None:
    chrome = driver
    pool_name, stream_name, map_name = f"{unique}-pool", f"{unique}-events", f"{unique}-cfg"
    stream = streaming.Stream(client, stream_name)
    async with (
        pool.open_node(client, pool_name) as node_a,
        rmap.join(client, map_name) as flags,
        stream.open_sink("mailer", max_polled=1, buffer_size=1) as _sink,
    ):
        worker_a = await node_a.add_worker(pool.job_tasks(_job))
        async with contextlib.AsyncExitStack() as node_b_block:
            node_b = await node_b_block.enter_async_context(pool.open_node(client, pool_name))
            worker_b = await node_b.add_worker(pool.job_tasks(_job))
            for index in range(8):
                await node_a.dispatch_job(f"job-{index}", b"payload")
            await flags.set("welcome-mail", "on")
            for index in range(5):
                await stream.add("user.created", f"user-{index}".encode())

            with dashboard(server_url) as base:
                # --- pools: both workers and every job, each job linked to its worker.
                def pools_page() -> list[str]:
                    chrome.get(f"{base}/pools")
                    wait_for(
                        chrome,
                        lambda d: len(texts(d, f'[data-pool="{pool_name}"] [data-job]')) == 8,
                        "the pool's 8 jobs",
                    )
                    return texts(chrome, f'[data-pool="{pool_name}"] [data-testid="job-worker"]')

                owners = await in_browser(pools_page)
                assert set(owners) <= {worker_a.id, worker_b.id}
                workers_shown = await in_browser(
                    lambda: texts(chrome, f'[data-pool="{pool_name}"] [data-worker] code')
                )
                assert {worker_a.id, worker_b.id} <= set(workers_shown)
                # A worker's row links each of its jobs (the link's text is the job key).
                linked = await in_browser(
                    lambda: texts(
                        chrome, f'[data-pool="{pool_name}"] [data-worker] a[href*="#job-"]'
                    )
                )
                assert sorted(linked) == [f"job-{index}" for index in range(8)]
                (link,) = await in_browser(
                    lambda: attributes(
                        chrome, '[data-job="job-0"] [data-testid="job-worker"] a', "href"
                    )
                )
                assert link.endswith(f"#worker-{pool_name}-{owners[0]}")
                await in_browser(lambda: no_console_errors(chrome, "/pools"))
                await in_browser(lambda: screenshot(chrome, "pools"))

                # Node B leaves: its jobs move to worker A, and the open page follows.
                await node_b_block.aclose()

                def all_on_a(d: Any) -> bool:
                    shown = texts(d, f'[data-pool="{pool_name}"] [data-testid="job-worker"]')
                    return len(shown) == 8 and set(shown) == {worker_a.id}

                await in_browser(lambda: wait_for(chrome, all_on_a, "every job moved to A"))

                # --- streams: the length follows added events; the sink links to its stream.
                def streams_page(length: int) -> None:
                    if not chrome.current_url.endswith("/streams"):
                        chrome.get(f"{base}/streams")
                    wait_for(
                        chrome,
                        lambda d: (
                            texts(d, f'[data-stream="{stream_name}"] [data-testid="stream-length"]')
                            == [f"length {length}"]
                        ),
                        f"stream length {length}",
                    )

                await in_browser(lambda: streams_page(5))
                for index in range(3):
                    await stream.add("user.created", f"late-{index}".encode())
                await in_browser(lambda: streams_page(8))
                (sink_link,) = await in_browser(
                    lambda: attributes(
                        chrome, f'[data-stream="{stream_name}"] [data-sink="mailer"] a', "href"
                    )
                )
                assert sink_link.endswith(f"#stream-{stream_name}")
                charts = await in_browser(
                    lambda: texts(chrome, f'[data-stream="{stream_name}"] figcaption')
                )
                assert any(caption.startswith("lag of mailer") for caption in charts), charts
                await in_browser(lambda: no_console_errors(chrome, "/streams"))
                await in_browser(lambda: screenshot(chrome, "streams"))

                # --- maps: content, and a new key appears.
                await flags.set("banner", "hello")

                def maps_page() -> None:
                    chrome.get(f"{base}/maps")
                    wait_for(
                        chrome,
                        lambda d: (
                            texts(d, f'[data-map="{map_name}"] [data-testid="map-size"]')
                            == ["2 keys"]
                        ),
                        "the map's 2 keys",
                    )

                await in_browser(maps_page)
                keys = await in_browser(
                    lambda: attributes(chrome, f'[data-map="{map_name}"] [data-key]', "data-key")
                )
                assert keys == ["banner", "welcome-mail"]
                await in_browser(lambda: no_console_errors(chrome, "/maps"))
                await in_browser(lambda: screenshot(chrome, "maps"))
        with anyio.CancelScope(shield=True), anyio.fail_after(30):
            await node_a.shutdown()


def test_dashboard_needs_a_redis_url() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PULSE_REDIS_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "pulse_trio", "dashboard"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert "dashboard needs a Redis server" in result.stderr
