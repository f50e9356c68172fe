"""The report in a real browser (Debian's headless Chromium): the slider, toggles, filters and views do
what the data says, hostile names stay text, and the console stays clean. Screenshots go to the
test run's artifacts (test-artifacts/, or $DUPFLOW_TEST_ARTIFACTS)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq
import pytest

from browser import ARTIFACTS, chromium, missing_browser
from dupflow.match.job import match_store
from dupflow.match.settings import MatchSettings
from dupflow.report import ReportSettings, write_report
from reportworld import HOSTILE, Reported, components, group_sizes, page_data, report_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Reported:
    world = report_world(tmp_path_factory.mktemp("browser-world"))
    write_report(str(world.out), ReportSettings(extra_scores=str(world.scores_file)))
    return world


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    why = missing_browser()
    if why:
        pytest.fail(why)
    with chromium() as d:
        yield d


@pytest.fixture
def opened(driver: Any, reported: Reported) -> Any:
    driver.get((reported.out / "report.html").as_uri())
    wait_for(driver, "return document.body.dataset.rendered >= 1")
    driver.get_log("browser")  # start each test with an empty console
    yield driver
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not errors, f"console: {errors}"


def wait_for(driver: Any, script: str, *args: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 10).until(lambda d: d.execute_script(script, *args))


def shown(driver: Any, key: str = "groups") -> int:
    return int(driver.find_element("id", "shown-count").get_attribute(f"data-{key}"))


def rendered(driver: Any) -> int:
    return int(driver.execute_script("return Number(document.body.dataset.rendered)"))


def act(driver: Any, fn: Any) -> None:
    """Do something on the page, then wait until the viewer has rendered its result."""
    before = rendered(driver)
    fn()
    wait_for(driver, "return Number(document.body.dataset.rendered) > arguments[0]", before)


def set_slider(driver: Any, value: float) -> None:
    slider = driver.find_element("id", "threshold")
    act(driver, lambda: driver.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))", slider, str(value)))


def visible_controls(driver: Any) -> set[str]:
    """The ids of the controls the active tab shows."""
    return {c.get_attribute("id") for c in driver.find_elements("css selector", "#controls [data-views]")
            if c.is_displayed()}


def test_the_threshold_slider_regroups_as_the_pairs_say(opened: Any, reported: Reported) -> None:
    from selenium.webdriver.common.keys import Keys

    pairs = pq.read_table(reported.out / "pairs.parquet")
    start = float(opened.find_element("id", "threshold").get_attribute("value"))
    assert shown(opened) == components(pairs, start) == json.loads(
        (reported.out / "summary.json").read_text())["totals"]["groups"]
    levels = sorted(set(pairs["similarity"].to_pylist()))
    assert len({components(pairs, t) for t in levels}) >= 3, "the world needs pairs at several similarities"
    for t in levels[1:]:
        set_slider(opened, round(t, 3) if round(t, 3) <= t else round(t, 3) - 0.001)
        assert shown(opened) == components(pairs, t), t
        assert len(opened.find_elements("css selector", "section.group")) == components(pairs, t)
    set_slider(opened, start)
    assert shown(opened) == components(pairs, start)
    act(opened, lambda: opened.find_element("id", "threshold").send_keys(Keys.END))  # as a user would: to 1.0
    assert shown(opened) == components(pairs, 1.0)
    assert opened.find_element("id", "threshold-value").text == "1.000"


def test_only_duplicates_and_sort_order_toggle(opened: Any, reported: Reported) -> None:
    scores = pq.read_table(reported.out / "scores.parquet")
    groups = shown(opened)
    assert shown(opened, "items") == groups
    act(opened, lambda: opened.find_element("id", "only-dup").click())
    singles = sum(1 for s in scores["status"].to_pylist() if s == "pass")
    assert shown(opened, "items") == groups + singles
    assert len(opened.find_elements("css selector", "section.group")) == groups + singles
    act(opened, lambda: opened.find_element("id", "only-dup").click())
    tops = [float(s.get_attribute("data-top")) for s in opened.find_elements("css selector", "section.group")]
    assert tops == sorted(tops, reverse=True)
    assert tops[0] > tops[-1]
    button = opened.find_element("id", "sort-order")
    act(opened, button.click)
    assert button.get_attribute("data-order") == "asc"
    assert button.text == "Ascending order"
    tops = [float(s.get_attribute("data-top")) for s in opened.find_elements("css selector", "section.group")]
    assert tops == sorted(tops)


def test_the_limit_pages_the_groups_and_images_per_row_resize_them(opened: Any) -> None:
    groups = shown(opened)
    limit = opened.find_element("id", "limit")
    act(opened, lambda: opened.execute_script(
        "arguments[0].value = 10; arguments[0].dispatchEvent(new Event('input'))", limit))
    seen, pages = 0, 0
    while True:
        tiles = opened.find_elements("css selector", "section.group .tile")
        assert 0 < len(tiles) <= 10 or len(opened.find_elements("css selector", "section.group")) == 1
        seen += len(opened.find_elements("css selector", "section.group"))
        pages += 1
        nxt = opened.find_element("id", "next-page")
        if not nxt.is_enabled():
            break
        act(opened, nxt.click)
    assert seen == groups
    assert pages > 1
    width = opened.execute_script("return document.querySelector('.tile').getBoundingClientRect().width")
    per_row = opened.find_element("id", "per-row")
    opened.execute_script("arguments[0].value = 2; arguments[0].dispatchEvent(new Event('input'))", per_row)
    wider = opened.execute_script("return document.querySelector('.tile').getBoundingClientRect().width")
    assert wider > 2 * width


def test_filters_by_dataset_leakage_method_and_name(opened: Any, reported: Reported) -> None:
    from selenium.webdriver.support.ui import Select

    summary = json.loads((reported.out / "summary.json").read_text())
    act(opened, lambda: opened.find_element("id", "leak").click())
    assert shown(opened) == summary["totals"]["leakage_groups"] == len(reported.world.leaks)
    act(opened, lambda: opened.find_element("id", "leak").click())
    act(opened, lambda: Select(opened.find_element("id", "dataset")).select_by_visible_text("val"))
    val = summary["datasets"]["val"]["duplicate_groups"] + summary["totals"]["leakage_groups"]
    assert shown(opened) == val
    act(opened, lambda: Select(opened.find_element("id", "dataset")).select_by_visible_text("all"))
    act(opened, lambda: Select(opened.find_element("id", "method")).select_by_visible_text("exact"))
    exact = [r for r in pq.read_table(reported.out / "pairs.parquet").to_pylist() if r["method"] == "exact"]
    assert shown(opened, "pairs") == len(exact)
    act(opened, lambda: Select(opened.find_element("id", "method")).select_by_visible_text("all"))
    act(opened, lambda: opened.find_element("id", "search").send_keys("t03_half"))
    names = [e.text for e in opened.find_elements("css selector", "section.group .name")]
    assert shown(opened) == 1
    assert "leak/t03_half.jpg" in names


def test_hostile_names_show_as_text_and_run_nothing(opened: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    title = opened.title
    act(opened, lambda: opened.find_element("id", "search").send_keys("onerror"))
    tiles = opened.find_elements("css selector", "section.group .name")
    assert HOSTILE in [t.text for t in tiles]
    act(opened, lambda: opened.find_element("id", "tab-images").click())
    assert HOSTILE in opened.find_element("id", "view").text
    with pytest.raises(NoAlertPresentException):
        _ = opened.switch_to.alert.text
    assert opened.title == title
    assert opened.execute_script("return document.querySelectorAll('img[src=\"x\"], img[onerror]').length") == 0


def test_every_view_renders_and_the_pair_view_shows_both_images(opened: Any, reported: Reported) -> None:
    data = page_data((reported.out / "report.html").read_text())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    opened.save_screenshot(str(ARTIFACTS / "report-groups.png"))
    duplicate = opened.find_element("css selector", "section.group .tile:not(.keeper)")
    duplicate.click()
    wait_for(opened, "return document.getElementById('modal').open")
    large = opened.find_elements("css selector", "#modal img.large")
    assert len(large) == 2
    # both at full size: the originals, which the page links (file://) and its CSP lets it show
    wait_for(opened, "return [...document.querySelectorAll('#modal img.large')].every(i => i.complete)")
    for img in large:
        assert img.get_attribute("src").startswith("file:///")
        assert opened.execute_script("return arguments[0].naturalWidth", img) in (320, 160)
    assert opened.find_element("id", "pair-title").text.startswith("similarity ")
    opened.save_screenshot(str(ARTIFACTS / "report-pair.png"))
    opened.find_element("id", "modal-close").click()
    expected = {"pairs": len(data["pairs"]["a"]), "errors": 1,
                "images": sum(1 for s in data["images"]["status"] if s == "fail")}
    for view in ("summary", "pairs", "images", "cross", "errors"):
        act(opened, lambda v=view: opened.find_element("id", f"tab-{v}").click())
        assert opened.find_element("id", f"tab-{view}").get_attribute("aria-selected") == "true"
        if view in expected:
            rows = opened.find_elements("css selector", "#view tbody tr")
            assert len(rows) == expected[view], view
        opened.save_screenshot(str(ARTIFACTS / f"report-{view}.png"))
    act(opened, lambda: opened.find_element("id", "tab-summary").click())
    assert len(opened.find_elements("css selector", "svg[data-method]")) == len(data["methods"])
    assert len(opened.find_elements("css selector", "svg circle")) == len(data["projection"]["img"])
    assert "confidence" in opened.page_source
    for name in ("groups", "pair", "summary", "images"):
        assert (ARTIFACTS / f"report-{name}.png").stat().st_size > 10_000


# what each control changes on each tab: the page must show it there and nowhere else
CONTROLS = {
    "summary": {"threshold-control", "method-control"},
    "groups": {"threshold-control", "limit-control", "per-row-control", "sort-order", "only-dup-control",
               "dataset-control", "leak-control", "method-control", "search-control"},
    "pairs": {"threshold-control", "limit-control", "sort-order", "dataset-control", "leak-control",
              "method-control", "search-control"},
    "images": {"threshold-control", "limit-control", "sort-order", "only-dup-control", "dataset-control",
               "leak-control", "method-control", "search-control"},
    "cross": {"threshold-control", "limit-control", "per-row-control", "sort-order", "dataset-control",
              "method-control", "search-control"},
    "errors": {"limit-control", "dataset-control", "search-control"},
}


def test_each_tab_shows_only_the_controls_that_act_on_it(opened: Any) -> None:
    assert visible_controls(opened) == CONTROLS["groups"]
    for view, expected in CONTROLS.items():
        act(opened, lambda v=view: opened.find_element("id", f"tab-{v}").click())
        assert visible_controls(opened) == expected, view


def test_the_pager_shows_only_when_there_is_more_than_one_page(opened: Any) -> None:
    pager = opened.find_element("id", "pager")
    assert not pager.is_displayed()  # every group fits on one page of 200 images
    limit = opened.find_element("id", "limit")
    act(opened, lambda: opened.execute_script(
        "arguments[0].value = 10; arguments[0].dispatchEvent(new Event('input'))", limit))
    assert pager.is_displayed()
    assert opened.find_element("id", "page-label").text.startswith("page 1 of ")
    act(opened, lambda: opened.find_element("id", "tab-summary").click())
    assert not pager.is_displayed()  # the summary has nothing to page
    act(opened, lambda: opened.find_element("id", "tab-images").click())
    assert pager.is_displayed()
    act(opened, lambda: opened.find_element("id", "tab-errors").click())
    assert not pager.is_displayed()  # one unreadable file


def test_the_pairs_tab_counts_pairs(opened: Any, reported: Reported) -> None:
    from selenium.webdriver.support.ui import Select

    data = page_data((reported.out / "report.html").read_text())
    total = len(data["pairs"]["a"])
    act(opened, lambda: opened.find_element("id", "tab-pairs").click())
    status = opened.find_element("id", "shown-count")
    assert shown(opened, "items") == total == len(opened.find_elements("css selector", "#view tbody tr"))
    assert status.text.startswith(f"{total} pairs at similarity ≥ ")
    assert "groups" not in status.text
    act(opened, lambda: Select(opened.find_element("id", "dataset")).select_by_visible_text("val"))
    val = data["datasets"].index("val")
    ds = data["images"]["ds"]
    touching = sum(1 for a, b in zip(data["pairs"]["a"], data["pairs"]["b"], strict=True) if val in (ds[a], ds[b]))
    assert 0 < touching < total
    assert shown(opened, "items") == touching == len(opened.find_elements("css selector", "#view tbody tr"))
    assert status.text.startswith(f"{touching} pairs at similarity ≥ ")
    assert status.text.endswith(f"(of {total} before the filters)")


def plotted_sizes(driver: Any) -> dict[str, int]:
    return {g.get_attribute("data-size"): int(g.get_attribute("data-count"))
            for g in driver.find_elements("css selector", "#group-sizes g[data-size]")}


def test_the_group_size_plot_and_headline_follow_the_slider(opened: Any, reported: Reported) -> None:
    data = page_data((reported.out / "report.html").read_text())
    pairs = pq.read_table(reported.out / "pairs.parquet")
    act(opened, lambda: opened.find_element("id", "tab-summary").click())
    start = float(opened.find_element("id", "threshold").get_attribute("value"))
    run = data["duplication"]
    assert plotted_sizes(opened) == {str(n): c for n, c in run["sizes"]} == {
        str(n): c for n, c in group_sizes(pairs, start).items()}
    headline = opened.find_element("id", "duplication")
    assert (int(headline.get_attribute("data-images")), int(headline.get_attribute("data-files"))) == (
        run["images"], run["files"])
    assert headline.text.startswith(f"{run['images']} duplicated images appearing {run['files']} times at similarity")
    levels = sorted(set(pairs["similarity"].to_pylist()))
    tighter = next(t for t in levels if group_sizes(pairs, t) != group_sizes(pairs, start))
    set_slider(opened, round(tighter, 3) if round(tighter, 3) <= tighter else round(tighter, 3) - 0.001)
    sizes = group_sizes(pairs, tighter)
    assert plotted_sizes(opened) == {str(n): c for n, c in sizes.items()}
    headline = opened.find_element("id", "duplication")
    assert int(headline.get_attribute("data-images")) == sum(sizes.values())
    assert int(headline.get_attribute("data-files")) == sum(n * c for n, c in sizes.items())


def test_a_one_dataset_one_method_report_hides_the_dataset_and_method_filters(driver: Any, reported: Reported) -> None:
    out = reported.world.root / "train-only"
    match_store(reported.world.store, str(out), MatchSettings(datasets=("train",), rules=("exact",)))
    write_report(str(out), ReportSettings())
    assert page_data((out / "report.html").read_text())["methods"] == ["exact"]
    driver.get((out / "report.html").as_uri())
    wait_for(driver, "return document.body.dataset.rendered >= 1")
    assert visible_controls(driver) == CONTROLS["groups"] - {"dataset-control", "leak-control", "method-control"}
    assert shown(driver) >= 1
