"""The Gradio app in a real browser: headless Chromium (Debian's `chromium`) driven by playwright, as a person uses it.

Playwright is launched with `executable_path` (never `playwright install`, which downloads). Without chromium the
tests skip, except under CI=1 (`.ci/run`), where `scripts/setup_env.sh` installs it and its absence is a failure. The
screenshot goes to `build/screenshots/space.png` in the repository (and the time per view is printed).
"""

import os
import shutil
import time
from pathlib import Path

import pytest
from space_fixtures import run_with_groups, serve

from hf_interest.explain import explain_recommendations
from hf_interest.space import SpaceBackend

SCREENSHOT = Path(__file__).resolve().parents[1] / "build" / "screenshots" / "space.png"
ROWS = '#recommendations [role="row"].virtual-row'


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: scripts/setup_env.sh installs Debian's chromium as root.")
        pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    return path


@pytest.fixture(scope="module")
def backend(tiny_run, tmp_path_factory):
    return SpaceBackend.from_pretrained(str(run_with_groups(tiny_run, tmp_path_factory.mktemp("browser") / "run")))


@pytest.fixture(scope="module")
def page(backend):
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    demo, url = serve(backend)
    assert url.startswith("http://127.0.0.1:")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.goto(url)
        page.wait_for_selector("#user input", timeout=30_000)
        yield page
        browser.close()
    demo.close()


def _page_items(page) -> list[str]:
    rows = page.locator(ROWS)
    return [rows.nth(r).locator(f'[data-testid="cell-{r}-1"]').inner_text().strip() for r in range(rows.count())]


def _wait_for_items(page, expected: list[str], timeout: float = 10.0) -> float:
    """Seconds until the page's recommendation table lists `expected`, or an AssertionError after `timeout`."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        if page.locator(ROWS).count() == len(expected) and _page_items(page) == expected:
            return time.perf_counter() - began
        time.sleep(0.05)
    raise AssertionError(f"the page shows {_page_items(page)}, expected {expected} within {timeout} s")


def _pick(page, locator: str, label: str) -> None:
    box = page.locator(f"{locator} input")
    box.click()
    box.fill(label)
    page.get_by_role("option", name=label, exact=True).click()


def _ranking(backend, history, times) -> list[str]:
    return [row[1] for row in backend.recommend(history, times, 10)]


def test_picking_a_user_shows_the_recommendations_and_the_trajectory(page, backend):
    user = list(backend.users)[0]
    expected = _ranking(backend, *backend.user_history(user))
    began = time.perf_counter()
    _pick(page, "#user", user)
    rows_after = _wait_for_items(page, expected, timeout=10.0)
    page.locator("#trajectory img").first.wait_for(timeout=10_000)
    plot_after = time.perf_counter() - began
    history = backend.user_history(user)[0].split()
    unseen = len(backend.tokenizer) - backend.tokenizer.num_special_tokens - len(set(history))
    assert len(expected) == min(10, unseen)  # k rows (the slider's default), or every item the user has not seen
    assert "Next categories" in page.locator("#summary").inner_text()
    assert page.locator("#group").inner_text().startswith("Group ")
    print(f"\nuser picked -> {len(expected)} rows in {rows_after:.2f} s, trajectory plot in {plot_after:.2f} s")


def test_removing_the_top_attributed_event_changes_the_ranking(page, backend):
    for user in list(backend.users)[:10]:  # the first fixture user for whom the removal changes the ranking
        history, times = backend.user_history(user)
        items, stamps = history.split(), [int(t) for t in times.split()]
        newest = backend.model.config.max_position_embeddings
        top = explain_recommendations(
            backend.model,
            backend.tokenizer,
            items[-newest:],
            stamps[-newest:],
            items=_ranking(backend, history, times)[:1],
        )[0][0]
        position = len(items) - len(items[-newest:]) + top["position"]
        after = _ranking(backend, *backend.remove_event(history, times, position))
        if after != _ranking(backend, history, times):
            break
    else:
        pytest.fail("no fixture user's ranking changes when their top-attributed event is removed")
    label = next(label for label, value in backend.events(history, times) if value == position)
    _pick(page, "#user", user)
    _wait_for_items(page, _ranking(backend, history, times))
    _pick(page, "#remove_choice", label)
    page.locator("#remove").click()
    seconds = _wait_for_items(page, after)
    assert page.locator("#history textarea").input_value().split() == items[:position] + items[position + 1 :]
    # every view recomputed (no view still "processing"), the plot drawn again: then the screenshot
    page.wait_for_function("!document.body.innerText.includes('processing')", timeout=10_000)
    page.locator("#trajectory img").first.wait_for(state="visible", timeout=10_000)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
    print(f"\nremoved event {position + 1} of user {user}: new ranking in {seconds:.2f} s; screenshot {SCREENSHOT}")


@pytest.mark.parametrize(
    ("history", "times", "message"),
    [
        ("nope", "", "not in this model's vocabulary: nope"),
        ("", "", "The history is empty"),
        ("{item} {item}", "1 garbage", "'garbage' is not"),
    ],
)
def test_bad_input_is_a_message_in_the_page_not_a_traceback(page, backend, history, times, message):
    page.locator("#history textarea").fill(history.format(item=list(backend.items)[0]))
    page.locator("#times textarea").fill(times)
    page.locator("#show").click()
    page.get_by_text(message).first.wait_for(timeout=10_000)
    assert "Traceback" not in page.content()
