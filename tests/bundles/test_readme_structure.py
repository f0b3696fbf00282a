"""Every bundle README shares one structure (issue 21, item 3), and none carries a machine path or a session log.

Pure text: the headings are read outside fenced code blocks, so the ``# comments`` of a bash block are not headings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
NAMES = sorted(p.parent.parent.name for p in BUNDLES.glob("*/docs/README.md"))
SECTIONS = ["Overview", "Data", "Commands", "Options", "Measured results", "References", "License"]
FORBIDDEN = ["/work/", "/root/", "load average"]


def _prose_lines(text: str) -> list[str]:
    """The README's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def _read(name: str) -> str:
    return (BUNDLES / name / "docs" / "README.md").read_text(encoding="utf-8")


def test_every_bundle_is_checked():
    assert NAMES == [
        "cluster_contrastive_pretrain",
        "dermoscopy_segmentation",
        "heart_ct_segmentation",
        "image_clustering",
        "local_discrimination_pretrain",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_top_level_sections_in_order(name):
    lines = _prose_lines(_read(name))
    titles = [line[1:].strip() for line in lines if re.match(r"#\s", line)]
    assert titles == [name], f"{name}: one '# {name}' title expected, got {titles}"
    sections = [line[2:].strip() for line in lines if re.match(r"##\s", line)]
    assert sections == SECTIONS, f"{name}: top-level sections {sections}, expected {SECTIONS}"


@pytest.mark.parametrize("name", NAMES)
def test_title_then_short_overview(name):
    lines = _prose_lines(_read(name))
    start = next(i for i, line in enumerate(lines) if re.match(r"#\s", line))
    end = next(i for i, line in enumerate(lines) if re.match(r"##\s", line))
    assert start == 0, f"{name}: the title must be the first line"
    intro = [line for line in lines[start + 1 : end] if line.strip()]
    assert 2 <= len(intro) <= 4, f"{name}: the overview under the title has {len(intro)} lines, expected 2-4"
    assert not any(line.startswith("#") for line in lines[start + 1 : end]), f"{name}: a heading before '## Overview'"


@pytest.mark.parametrize("name", NAMES)
def test_no_machine_paths_or_session_logs(name):
    text = _read(name)
    for needle in FORBIDDEN:
        hits = [n + 1 for n, line in enumerate(text.splitlines()) if needle in line.lower()]
        assert not hits, f"{name}: {needle!r} on line(s) {hits}"


@pytest.mark.parametrize("name", NAMES)
def test_measured_results_point_to_benchmarks(name):
    lines = _prose_lines(_read(name))
    start = lines.index("## Measured results")
    end = lines.index("## References")
    assert "BENCHMARKS.md" in "\n".join(lines[start:end]), f"{name}: 'Measured results' names no BENCHMARKS.md section"


def test_code_block_comments_are_not_headings():
    text = "# x\n\nline one\n\n```bash\n# a comment\n## another\n```\n## Overview\n"
    assert [line for line in _prose_lines(text) if line.startswith("#")] == ["# x", "## Overview"]
