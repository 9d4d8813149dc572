#!/usr/bin/env python
"""Full-page PNGs of report.html, compare.html and the MLflow run page, taken in headless Chromium.

    PYTHONPATH=$PWD .venv/bin/python scripts/screenshots.py                 # demo-like runs in a temp dir
    PYTHONPATH=$PWD .venv/bin/python scripts/screenshots.py --results results --tracking-uri sqlite:///results/mlflow.db

Without --results it builds a small SYNTHETIC market (`datasets synth` + `datasets ingest
binance-archive`, 4 days) and backtests configs/demo.yaml twice (as is, and a variant with
take-profit and stop-loss via --set). With --results it takes the two newest run folders there (or
--runs). Then `bt compare` writes compare.html, scripts/mlflow_server.sh serves the sqlite store the
runs logged to (an http(s) tracking URI is used as it is), and Chromium (observatory/browser.py)
saves, into --out: 01-report*.png, 02-compare.png, 03-mlflow-run.png (overview: params, metrics,
dataset input), 04-mlflow-artifacts.png (figures/, path.html selected) and 05-mlflow-report.png
(report.html in MLflow's artifact preview). Pages taller than one window are saved whole
and also as window-high parts (``-1``, ``-2``, ...). Needs selenium (the test extra) and Debian's
chromium + chromium-driver. Takes about a minute and a half.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from observatory.browser import chromium, install_chromium  # noqa: E402

WIDTH, WINDOW_H = 1400, 1600
SYMBOL, START, END, DAYS = "PLANTUSDT", "2024-03-01", "2024-03-04", 4
VARIANT = ["--set", "name=plant-whale-1h-tp", "--set", "backtest.take_profit=0.01", "--set", "backtest.stop_loss=0.005"]


class ShotError(Exception):
    """What went wrong, in one line."""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}


def _run(args: list[str], log: Path) -> str:
    """Run ``python -m ...`` from the repository root; its stdout, or ShotError with the log's tail."""
    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    with log.open("a") as f:
        f.write(f"$ {' '.join(args)}\n{r.stdout}{r.stderr}\n")
    if r.returncode:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ShotError(f"`{' '.join(args[:3])}` failed: {tail[0]} (log: {log})")
    return r.stdout


def build_demo(work: Path, log: Path) -> tuple[Path, str, list[Path]]:
    """A 4-day synthetic market, ingested, and two `bt run`s of configs/demo.yaml into ``work``."""
    synth, lake, results = work / "synth", work / "lake", work / "results"
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    _run(
        ["-m", "datasets.cli", "synth", "--out", str(synth), "--symbol", SYMBOL, "--start", START, "--days", str(DAYS)],
        log,
    )
    _run(
        [
            "-m",
            "datasets.cli",
            "ingest",
            "binance-archive",
            "--root",
            str(synth),
            "--symbol",
            SYMBOL,
            "--start",
            START,
            "--end",
            END,
            "--lake",
            str(lake),
        ],
        log,
    )
    runs = []
    for extra in ([], VARIANT):
        out = _run(
            [
                "-m",
                "bt.cli",
                "run",
                str(ROOT / "configs" / "demo.yaml"),
                "--lake",
                str(lake),
                "--end",
                END,
                "--results",
                str(results),
                "--tracking-uri",
                tracking,
                "--json",
                *extra,
            ],
            log,
        )
        runs.append(results / json.loads(out)["run_id"])
    return results, tracking, runs


def newest_runs(results: Path, n: int = 2) -> list[Path]:
    runs = [p.parent for p in results.glob("*/report.html")]
    if not runs:
        raise ShotError(f"no run folder with a report.html under {results}; run `bt run CONFIG --results {results}`")
    return sorted(runs, key=lambda p: (p / "metrics.json").stat().st_mtime, reverse=True)[:n]


def _api(base: str, endpoint: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"{base}/api/2.0/mlflow/{endpoint}", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def mlflow_run(base: str, run_id: str) -> tuple[str, str]:
    """``(experiment id, MLflow run id)`` of the newest MLflow run tagged ``whalebt.run_id = run_id``."""
    exps = [e["experiment_id"] for e in _api(base, "experiments/search", {"max_results": 1000}).get("experiments", [])]
    found = _api(
        base,
        "runs/search",
        {"experiment_ids": exps, "filter": f"tags.`whalebt.run_id` = '{run_id}'", "order_by": ["start_time DESC"]},
    ).get("runs", [])
    if not found:
        raise ShotError(f"no MLflow run tagged whalebt.run_id={run_id} at {base}; pass the --tracking-uri it logged to")
    info = found[0]["info"]
    return info["experiment_id"], info["run_id"]


class MlflowServer:
    """scripts/mlflow_server.sh over an existing sqlite store (its state in ``state``)."""

    def __init__(self, tracking_uri: str, state: Path):
        if not tracking_uri.startswith("sqlite:///"):
            raise ShotError(f"--tracking-uri must be sqlite:///FILE or http(s)://HOST, not {tracking_uri!r}")
        db = Path(tracking_uri[len("sqlite:///") :]).resolve()
        if not db.is_file():
            raise ShotError(f"no MLflow store at {db}; run `bt run` with --tracking-uri {tracking_uri} first")
        self.env = {
            **os.environ,
            "MLFLOW_SERVER_DIR": str(state),
            "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{db}",
            "PYTHON": sys.executable,
        }

    def _sh(self, cmd: str) -> subprocess.CompletedProcess:
        script = str(ROOT / "scripts" / "mlflow_server.sh")
        return subprocess.run(["bash", script, cmd], env=self.env, capture_output=True, text=True, timeout=180)

    def __enter__(self) -> str:
        r = self._sh("start")
        if r.returncode:
            raise ShotError(f"mlflow server did not start: {(r.stderr.strip().splitlines() or ['?'])[0]}")
        return r.stdout.strip().splitlines()[-1]

    def __exit__(self, *exc) -> None:
        self._sh("stop")


def _wait(driver, cond, what: str, timeout_s: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(lambda d: cond(d))
    except Exception as exc:
        raise ShotError(f"timed out after {timeout_s:.0f} s waiting for {what} on {driver.current_url}") from exc


_PLOTS = """var els = Array.from(document.querySelectorAll('div.fig, div.plotly-graph-div'));
return [els.length, els.filter(function (e) {
  return e.classList.contains('js-plotly-plot') && e.querySelector('.main-svg'); }).length];"""

# the tallest scrolling content: the document, or an inner scroll container (MLflow's pages)
_HEIGHT = """var h = document.documentElement.scrollHeight;
document.querySelectorAll('*').forEach(function (e) {
  var o = getComputedStyle(e).overflowY;
  if ((o === 'auto' || o === 'scroll') && e.scrollHeight > e.clientHeight + 1)
    h = Math.max(h, e.scrollHeight - e.clientHeight + window.innerHeight);
});
return h;"""

_FRAMES = (
    "var done = arguments[arguments.length - 1]; requestAnimationFrame(function () { requestAnimationFrame(done); });"
)


def plotted(driver) -> bool:
    """Every figure of the page drawn by plotly (and at least one)."""
    n, drawn = driver.execute_script(_PLOTS)
    return n > 0 and drawn == n


def shoot(driver, out: Path, name: str) -> list[Path]:
    """``name.png`` of the whole page; a page taller than the window also as window-high parts."""
    driver.set_window_size(WIDTH, WINDOW_H)
    driver.execute_async_script(_FRAMES)
    chrome = driver.execute_script("return window.outerHeight - window.innerHeight")
    height = min(int(driver.execute_script(_HEIGHT)), 12000)
    saved = []
    if height > driver.execute_script("return window.innerHeight"):
        view = driver.execute_script("return window.innerHeight")
        for i, y in enumerate(range(0, height, view), 1):
            driver.execute_script(f"window.scrollTo(0, {y})")
            driver.execute_async_script(_FRAMES)
            saved.append(out / f"{name}-{i}.png")
            driver.save_screenshot(str(saved[-1]))
        driver.execute_script("window.scrollTo(0, 0)")
    driver.set_window_size(WIDTH, height + chrome)
    driver.execute_async_script(_FRAMES)
    full = out / f"{name}.png"
    driver.save_screenshot(str(full))
    driver.set_window_size(WIDTH, WINDOW_H)
    return [full, *saved]


def _preview_plotted(driver) -> bool:
    """An iframe of the page (MLflow's artifact preview) with all its figures drawn."""
    from selenium.common.exceptions import WebDriverException

    for frame in driver.find_elements("css selector", "iframe"):
        try:
            driver.switch_to.frame(frame)
            if plotted(driver):
                return True
        except WebDriverException:  # a preview replaced while we looked
            pass
        finally:
            driver.switch_to.default_content()
    return False


def _text_has(driver, needles: list[str]) -> bool:
    text = driver.execute_script("return document.body ? document.body.innerText : ''")
    return all(n in text for n in needles)


_ASSISTANT_CLOSE = """return Array.from(document.querySelectorAll('button[aria-label="Close"]')).find(function (b) {
  for (var p = b.parentElement, i = 0; p && i < 4; p = p.parentElement, i++)
    if ((p.innerText || '').indexOf('MLflow Assistant') === 0) return true;
  return false; }) || null;"""


def close_assistant(driver) -> None:
    """Close MLflow 3's assistant side panel when it is open (it takes a quarter of the page)."""
    button = driver.execute_script(_ASSISTANT_CLOSE)
    if button is not None:
        button.click()
        _wait(driver, lambda dr: dr.execute_script(_ASSISTANT_CLOSE) is None, "MLflow's assistant panel to close", 10)


def take(runs: list[Path], compare: Path, base: str, out: Path, profile: Path) -> list[Path]:
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    exp_id, mlflow_id = mlflow_run(base, metrics["run_id"])
    d = metrics["data"]
    dataset = f"{d['exchange']}/{d['symbol']}"
    driver = chromium(profile, width=WIDTH, height=WINDOW_H)
    saved: list[Path] = []
    try:
        for page, name in ((runs[0] / "report.html", "01-report"), (compare, "02-compare")):
            driver.get(page.resolve().as_uri())
            _wait(driver, plotted, f"the figures of {page.name}")
            saved += shoot(driver, out, name)
        run_page = f"{base}/#/experiments/{exp_id}/runs/{mlflow_id}"
        driver.get(f"{run_page}?workflowType=machine_learning")
        needles = ["Parameters", "Metrics", "signal.whale.min_notional_usd", "mean_return", dataset]
        _wait(driver, lambda dr: _text_has(dr, needles), "the MLflow run overview (params, metrics, dataset)")
        close_assistant(driver)
        saved += shoot(driver, out, "03-mlflow-run")
        for artifact, name in (("figures/path.html", "04-mlflow-artifacts"), ("report.html", "05-mlflow-report")):
            driver.get("about:blank")  # a new hash alone does not change the selected artifact
            driver.get(f"{run_page}/artifacts/{artifact}?workflowType=machine_learning")
            needles = ["figures", "metrics.json", artifact]
            _wait(driver, lambda dr, n=needles: _text_has(dr, n), "the MLflow artifacts view")
            close_assistant(driver)
            _wait(driver, lambda dr: dr.find_elements("css selector", "iframe"), f"the preview of {artifact}")
            if artifact == "report.html":  # offline: it inlines plotly (figures/*.html load it from a CDN)
                _wait(driver, _preview_plotted, "the report's figures in MLflow's preview")
            saved += shoot(driver, out, name)
    finally:
        driver.quit()
    return saved


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--results", type=Path, help="results folder with run folders (default: build demo runs in a temp dir)"
    )
    ap.add_argument("--tracking-uri", help="store the runs logged to (default: sqlite:///RESULTS/mlflow.db)")
    ap.add_argument(
        "--runs", nargs="+", metavar="RUN", help="run folders or ids under --results (default: the two newest)"
    )
    ap.add_argument("--out", type=Path, default=Path("/tmp/shots"), help="folder for the PNGs (default: /tmp/shots)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (runs, lake, compare.html, logs)")
    args = ap.parse_args(argv)
    t0 = time.time()
    work = Path(tempfile.mkdtemp(prefix="whalebt-shots-"))
    log = work / "commands.log"
    try:
        why = install_chromium()
        if why:
            raise ShotError(why)
        if args.results is None:
            results, tracking, runs = build_demo(work, log)
        else:
            results = args.results.resolve()
            tracking = args.tracking_uri or f"sqlite:///{results / 'mlflow.db'}"
            runs = (
                [Path(r) if Path(r).is_dir() else results / r for r in args.runs] if args.runs else newest_runs(results)
            )
            if missing := [str(r) for r in runs if not (r / "report.html").is_file()]:
                raise ShotError(f"no report.html in {', '.join(missing)}; pass run folders that `bt run` wrote")
        compare = work / "compare.html"
        _run(["-m", "bt.cli", "compare", *map(str, runs), "--out", str(compare), "--results", str(results)], log)
        args.out.mkdir(parents=True, exist_ok=True)
        if tracking.startswith(("http://", "https://")):
            saved = take(runs, compare, tracking.rstrip("/"), args.out, work / "profile")
        else:
            with MlflowServer(tracking, work / "mlflow-server") as base:
                saved = take(runs, compare, base, args.out, work / "profile")
    except ShotError as exc:
        args.keep = log.exists()  # the log the message points to
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for p in saved:
        print(p)
    print(
        f"{len(saved)} screenshots in {args.out} ({time.time() - t0:.0f} s)" + (f"; kept {work}" if args.keep else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
