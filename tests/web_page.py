"""Driving the exported web page in Debian's headless Chromium (selenium + the system chromedriver).

No browser is downloaded: the test uses /usr/bin/chromium and /usr/bin/chromedriver from
`apt-get install -y chromium chromium-driver`. WebGL and WebGPU run on SwiftShader (the CPU).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import io
import os
import shutil
import threading
import time

import numpy as np

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
APT_LINE = "apt-get install -y chromium chromium-driver"


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        return f"Chromium not installed (enable the browser tests with: {APT_LINE})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[test]')"
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_folder(folder: str):
    """`python -m http.server` for `folder` on 127.0.0.1 at an ephemeral port, in a thread; yields the URL."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=folder)
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def chromium_flags(profile: str) -> list[str]:
    return [
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--use-angle=swiftshader",  # WebGL on the CPU
        "--enable-unsafe-swiftshader",
        "--enable-unsafe-webgpu",  # WebGPU on SwiftShader's Vulkan
        "--enable-features=Vulkan",
        "--use-vulkan=swiftshader",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1100,900",
        f"--user-data-dir={profile}",
    ]


@contextlib.contextmanager
def chromium(profile: str, command_timeout: float = 600):
    """A headless Chromium driven by the system chromedriver, with a fresh profile folder.

    command_timeout: seconds one WebDriver command may wait; a command waits while the page's main
    thread computes a tile (TF.js's CPU backend runs a whole tile synchronously).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in chromium_flags(profile):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.command_executor._client_config.timeout = command_timeout
    driver.set_script_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_state(driver, states: tuple[str, ...], timeout: float, what: str) -> dict:
    """Polls the page's `window.realEsrgan` until its state is one of `states`; returns it."""
    deadline = time.monotonic() + timeout
    page = None
    while time.monotonic() < deadline:
        page = driver.execute_script(
            "const p = window.realEsrgan; return p && {state: p.state, message: p.message, "
            "backend: p.backend, tileTimesMs: p.tileTimesMs, "
            "progress: document.getElementById('progress').value};"
        )
        if page and page["state"] in states:
            return page
        time.sleep(0.2)
    raise AssertionError(f"waited {timeout:.0f} s for {what} (page state {states}); last seen: {page}")


def open_page(driver, url: str, **params) -> dict:
    """Loads index.html with query parameters (backend, tile, pad, alpha); waits for the model metadata."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    driver.get(f"{url}/index.html?{query}")
    return wait_for_state(driver, ("idle", "error"), 60, "the page to read model/model.json")


def upload(driver, path: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "file").send_keys(os.path.abspath(path))


def result_png(driver) -> bytes:
    """The PNG behind the page's download link."""
    encoded = driver.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch(window.realEsrgan.resultUrl).then((r) => r.arrayBuffer()).then((buffer) => {
          const bytes = new Uint8Array(buffer);
          let text = "";
          for (let i = 0; i < bytes.length; i += 8192) {
            text += String.fromCharCode(...bytes.subarray(i, i + 8192));
          }
          done(btoa(text));
        }, (e) => done("error: " + e.message));"""
    )
    if encoded.startswith("error:"):
        raise AssertionError(f"could not read the page's result: {encoded}")
    return base64.b64decode(encoded)


def result_pixels(driver) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(result_png(driver))))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
