"""What README.md and docs/ say about their own numbers holds: each recorded result names the
command that wrote it, and the tables that quote a recorded result agree with it."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
BENCH_JSONS = sorted((ROOT / "docs").glob("bench_*.json"))


@pytest.mark.parametrize("path", BENCH_JSONS, ids=lambda p: p.name)
def test_each_bench_json_names_the_command_that_wrote_it(path):
    report = json.loads(path.read_text())
    args = shlex.split(report["command"])
    assert args[:3] == ["python", "-m", "jsla_fast.bench"], report["command"]
    assert "--json" in args and args[args.index("--json") + 1] == f"docs/{path.name}", (
        f"{path.name} records the command {report['command']!r}, which writes another file")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_docs_cite_no_tracker_numbers(path):
    """A reader who clones the repository has no issue tracker: docs name features and sections."""
    hits = [line for line in path.read_text().splitlines() if re.search(r"\b[Ii]ssues? #?\d+", line)]
    assert not hits, hits
