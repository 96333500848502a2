"""The report: one self-contained HTML page, built from the committed benchmarks/results and
rendered in headless Chromium (Debian's ``chromium``; ``make test`` installs it as root)."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from wm_envs.checkpoint import shipped_models
from wm_envs.cli import CHECKOUT
from wm_envs.report import write_report
from wm_envs.tasks import TASKS

RESULTS = CHECKOUT / "benchmarks" / "results"
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def shipped_pairs() -> list[tuple[str, str]]:
    return [(task, model) for task in TASKS for model in shipped_models(task)]


def compare_folder(task: str, model: str) -> Path:
    return RESULTS / f"compare-{model}-{task}"


def test_report_renders_in_chromium_with_every_shipped_pair(tmp_path):
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e '.[test]'"
    )
    if not CHROMIUM.exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` as root (make test "
            "does this where it can)"
        )
    page_path = write_report(tmp_path / "report.html", RESULTS)
    assert page_path.stat().st_size < 5e6  # self-contained, yet a few MB at most
    with_results = [
        pair for pair in shipped_pairs() if (compare_folder(*pair) / "compare.json").exists()
    ]
    errors, requests = [], []
    with playwright.sync_playwright() as driver, tempfile.TemporaryDirectory() as profile:
        browser = driver.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=BROWSER_ARGS, headless=True
        )
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(page_path.as_uri())
        page.wait_for_function(
            "() => [...document.querySelectorAll('video')].every("
            "v => v.error || v.readyState >= 2)",
            timeout=20_000,
        )
        images = page.eval_on_selector_all(
            "img", "all => all.map(i => ({ok: i.complete && i.naturalWidth > 0, alt: i.alt}))"
        )
        videos = page.eval_on_selector_all(
            "video", "all => all.map(v => ({state: v.readyState, error: v.error && v.error.code}))"
        )
        rows = page.eval_on_selector_all(
            "table.headline tr[data-pair]",
            "all => all.map(r => ({pair: r.dataset.pair,"
            " cells: [...r.cells].map(c => c.innerText)}))",
        )
        page.screenshot(path=tmp_path / "report.png", full_page=True)
        browser.close()
    if os.environ.get("WM_ENVS_ARTIFACTS"):
        artifacts = Path(os.environ["WM_ENVS_ARTIFACTS"])
        artifacts.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "report.png", artifacts / "report.png")
    assert errors == []
    assert [url for url in requests if not url.startswith("data:")] == [page_path.as_uri()]
    # one plot per pair with results, one video per pair whose model decodes images (a
    # state-only model's compare writes none), every one of them loaded
    with_videos = [
        pair for pair in with_results if (compare_folder(*pair) / "compare.mp4").exists()
    ]
    plots = [path for pair in with_results for path in compare_folder(*pair).glob("*.png")]
    assert len(images) == len(plots) and all(image["ok"] for image in images), images
    assert len(videos) == len(with_videos), videos
    assert all(video["error"] is None and video["state"] >= 2 for video in videos), videos
    # the table lists every shipped pair: its start kinds' numbers, or how to make them
    assert {row["pair"] for row in rows} == {f"{model}-{task}" for task, model in shipped_pairs()}
    for task, model in shipped_pairs():
        cells = [row["cells"] for row in rows if row["pair"] == f"{model}-{task}"]
        assert all(row[:2] == [TASKS[task].name, model] for row in cells)
        if (task, model) not in with_results:
            assert len(cells) == 1 and "no compare results: run wm-envs compare" in cells[0][2]
            continue
        headline = json.loads((compare_folder(task, model) / "compare.json").read_text())
        headline = headline["headline"]
        assert [row[2] for row in cells] == [start.replace("_", " ") for start in headline]
        for row, numbers in zip(cells, headline.values(), strict=True):
            if "psnr_1" not in numbers:  # a state-only model: no image metrics
                assert row[3:6] == ["–"] * 3 and "cm" in row[6]
                continue
            assert row[3] == f"{numbers['psnr_1']:.1f} ({numbers['copy_psnr_1']:.1f})"


def test_a_pair_without_compare_results_says_how_to_make_them(tmp_path):
    task, model = shipped_pairs()[0]
    results = tmp_path / "results"
    results.mkdir()
    page = write_report(tmp_path / "report.html", results).read_text()
    command = f"wm-envs compare --task {task} --model {model} --record --out {results}"
    assert f"no compare results: run <code>{command}/compare-{model}-{task}</code>" in page
    assert "no wm_throughput*.json" in page


def test_a_state_only_models_row_shows_its_tracked_error_without_image_metrics(tmp_path):
    import re

    pairs = [
        pair
        for pair in shipped_pairs()
        if (compare_folder(*pair) / "compare.json").exists()
        and "psnr_1"
        not in json.loads((compare_folder(*pair) / "compare.json").read_text())["headline"][
            "mid_episode"
        ]
    ]
    if not pairs:
        pytest.skip("no shipped state-only model with committed compare results")
    page = write_report(tmp_path / "report.html", RESULTS).read_text()
    for task, model in pairs:
        rows = re.findall(f"<tr data-pair='{model}-{task}'>(.*?)</tr>", page)
        assert len(rows) == 2  # first frame, mid-episode
        for row in rows:
            cells = re.findall("<td>(.*?)</td>", row)
            assert cells[3:6] == ["–"] * 3 and "position_cm" in cells[6]


def test_compare_results_of_another_checkpoint_are_refused(tmp_path):
    task, model = shipped_pairs()[0]
    source = compare_folder(task, model) / "compare.json"
    if not source.exists():
        pytest.skip(f"no committed {source} to start from")
    report = json.loads(source.read_text())
    report["config"]["checkpoint"] = "runs/some-other-run"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "compare.json").write_text(json.dumps(report))
    with pytest.raises(ValueError, match="compares the checkpoint runs/some-other-run"):
        write_report(tmp_path / "report.html", RESULTS, [tmp_path])
    with pytest.raises(ValueError, match="does not exist"):
        write_report(tmp_path / "report.html", RESULTS, [tmp_path / "absent"])


def test_the_command_writes_the_page_and_prints_its_path(tmp_path, capsys):
    from wm_envs.cli import main

    task, model = shipped_pairs()[0]
    fresh = tmp_path / "demo_out" / model
    shutil.copytree(compare_folder(task, model), fresh)
    main(["report", "--fresh", str(fresh.parent), "--out", str(tmp_path / "report.html")])
    assert capsys.readouterr().out.startswith(f"report: {tmp_path / 'report.html'} (")
    page = (tmp_path / "report.html").read_text()
    assert f"{fresh / 'compare.json'}: " in page  # the fresh folder, not --results', is shown
