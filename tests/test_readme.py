"""Every shell block of README.md runs as written (in order, in a scratch folder).

A block preceded by ``<!-- not run: reason -->`` is skipped; the reason must say why (cloud,
servers, the exchange). The others run with ``bash -euo pipefail`` from a folder that holds
links to the repository's ``configs/`` and ``tests/data/``, with ``bt``, ``datasets`` and ``live``
on PATH running this checkout's code; ``results/`` is the folder's own. Port 9001 in a block is
replaced by a free port.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*not run:\s*(.*?)\s*-->$")
SHELLS = ("bash", "sh", "console")


def readme_blocks(text: str) -> list[dict]:
    """Shell blocks in order: ``{line, lang, code, skip}`` (``skip``: the marker's reason or None)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        lang, start = m.group(1), i
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        body = lines[i + 1 : j]
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = MARKER.match(lines[k].strip()) if k >= 0 else None
        if lang in SHELLS:
            if lang == "console":  # `$ cmd` lines are the commands; the rest is output
                body = [ln[2:] for ln in body if ln.startswith("$ ")]
            blocks.append(
                {
                    "line": start + 1,
                    "lang": lang,
                    "code": "\n".join(body) + "\n",
                    "skip": marker.group(1) if marker else None,
                }
            )
        i = j + 1
    return blocks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_markers_say_why():
    blocks = readme_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 6
    for b in blocks:
        if b["skip"] is not None:
            assert len(b["skip"]) > 20, f"README line {b['line']}: say why the block is not run"


def test_parser_reads_fences_and_markers():
    text = (
        "x\n<!-- not run: needs the cloud for real -->\n```bash\na\n```\n\n```sh\nb\n```\n```console\n$ c\nout\n```\n"
    )
    got = readme_blocks(text)
    assert [(b["code"], b["skip"]) for b in got] == [("a\n", "needs the cloud for real"), ("b\n", None), ("c\n", None)]


def test_every_runnable_readme_command_runs_as_written(tmp_path):
    blocks = readme_blocks((ROOT / "README.md").read_text())
    runnable = [b for b in blocks if b["skip"] is None]
    text = "".join(b["code"] for b in runnable)
    # the workflow, the models and the live pair are among them
    for needle in (
        "datasets ingest binance-archive",
        "bt run configs/demo.yaml",
        "bt sweep",
        "bt compare",
        "live replay",
        "live run",
        "--set ",
    ):
        assert needle in text, needle
    work = tmp_path / "repo"
    (work / "tests").mkdir(parents=True)
    (work / "configs").symlink_to(ROOT / "configs")
    (work / "tests" / "data").symlink_to(ROOT / "tests" / "data")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for prog in ("bt", "datasets", "live"):
        shim = bindir / prog
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {prog}.cli "$@"\n')
        shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHALEBT_", "MLFLOW_", "OPTUNA_", "AZURE_"))}
    env.update(PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    port = str(_free_port())
    timings = []
    for b in runnable:
        code = b["code"].replace("9001", port)
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=600
        )
        timings.append((b["line"], time.perf_counter() - t0))
        assert proc.returncode == 0, (
            f"README.md block at line {b['line']} failed (exit {proc.returncode}):\n{code}\n--- stdout\n"
            f"{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        )
    # the live pair journaled every signal of the recording, as bt signals does
    journal = (work / "results" / "demo-live" / "journal.jsonl").read_text().splitlines()
    assert len(journal) > 100
    assert (work / "results" / "compare.html").is_file()
    print("README blocks (line, seconds):", [(line, round(s, 1)) for line, s in timings])
