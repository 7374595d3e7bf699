"""The review page in a real browser (Playwright driving Debian's chromium): label three
particles with the keyboard, reload and find them kept; kill the server, restart it and find
nothing lost; undo; a wrong token is refused. Skips when chromium or Playwright is missing
(scripts/setup.sh installs both)."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_review import make_micrograph_folder

CHROMIUM = Path(os.environ.get("LIPOCLASS_CHROMIUM", "/usr/bin/chromium"))
sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("uvicorn")
if not CHROMIUM.is_file():
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

SRC = Path(__file__).resolve().parents[1] / "src"


def _start(folder: Path) -> tuple[subprocess.Popen[str], str]:
    """``lipoclass review FOLDER --no-browser`` in a subprocess; its URL from stdout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lipoclass",
            "review",
            str(folder),
            "--queue",
            "audit",
            "--reviewer",
            "tester",
            "--no-browser",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        m = re.search(r"review page: (\S+)", line)
        if m:
            return proc, m.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"no URL printed; stderr: {proc.stderr.read() if proc.stderr else ''}")


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)  # no clean shutdown: what a crash leaves
        proc.wait(timeout=10)


def _decisions(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="") as fh:
        return [(r["id"], r["new_label"]) for r in csv.DictReader(fh)]


@pytest.fixture
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _press(page: object, key: str) -> None:
    page.keyboard.press(key)  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "document.getElementById('status').className === 'saved'", timeout=10000
    )
    page.evaluate("document.getElementById('status').className = ''")  # type: ignore[attr-defined]


def test_keyboard_review_survives_reload_and_kill(tmp_path: Path, browser: object) -> None:
    folder = make_micrograph_folder(tmp_path)
    reviews = folder / "reviews.csv"
    proc, url = _start(folder)
    try:
        page = browser.new_page()  # type: ignore[attr-defined]
        assert page.goto(url).status == 200
        page.wait_for_selector(".tile.current")
        ids = page.eval_on_selector_all(".tile", "ts => ts.map(t => t.dataset.id)")
        assert len(ids) == 8
        _press(page, "1")  # first particle: class 1
        _press(page, "0")  # second: not a particle
        page.keyboard.press("ArrowRight")  # the cursor is on the third: skip it
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowRight")
        assert page.get_attribute(".tile.current", "data-id") == ids[3]
        _press(page, "2")  # fourth: class 2
        # on disk at once, while the server runs
        assert _decisions(reviews) == [
            (ids[0], "unilamellar"),
            (ids[1], "not_a_particle"),
            (ids[3], "multilamellar"),
        ]
        assert page.inner_text("[data-count='unilamellar']") == "1"
        assert "3 / 8 decided" in page.inner_text("#progress")
        page.reload()
        page.wait_for_selector(".tile.current")
        shown = page.eval_on_selector_all(".tile", "ts => ts.map(t => t.dataset.decision)")
        assert shown[:4] == ["unilamellar", "not_a_particle", "", "multilamellar"]
        # resumes at the first undecided particle
        assert page.get_attribute(".tile.current", "data-id") == ids[2]
        # a wrong token is refused, by the page and by the API
        bad = re.sub(r"token=[^&]+", "token=wrong", url)
        assert page.goto(bad).status == 403
        assert (
            page.goto(url.replace("/?", "/api/state?").replace("token=", "token=x")).status == 403
        )
    finally:
        _kill(proc)
    assert len(_decisions(reviews)) == 3  # every confirmed decision survived the kill

    proc, url2 = _start(folder)
    try:
        assert url2 != url  # a new token (and port) each start
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(url2)
        page.wait_for_selector(".tile.current")
        shown = page.eval_on_selector_all(".tile", "ts => ts.map(t => t.dataset.decision)")
        assert shown[:4] == ["unilamellar", "not_a_particle", "", "multilamellar"]
        assert page.get_attribute(".tile.current", "data-id") == ids[2]
        _press(page, "u")  # third: unsure, then undone
        _press(page, "z")
        assert page.get_attribute(f".tile[data-id='{ids[2]}']", "data-decision") == ""
        page.keyboard.press("Enter")  # the micrograph context of the current particle
        page.wait_for_selector("#detail img[alt^='micrograph context']")
        ok = page.evaluate(
            "document.querySelector('#detail img').naturalWidth > 0 || "
            "new Promise(r => document.querySelector('#detail img').onload = "
            "() => r(true))"
        )
        assert ok
    finally:
        _kill(proc)
    assert _decisions(reviews)[3:] == [(ids[2], "unsure"), (ids[2], "")]
