"""The documentation: every relative link resolves and every fenced Python example runs.

Each page's ```python blocks run in order in one namespace (a later block may use an earlier
block's names), in a temporary working directory, so an example that writes files cannot touch
the repository.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _ids(pages):
    return [str(p.relative_to(ROOT)) for p in pages]


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_relative_links_resolve(page: Path):
    missing = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # external URL or in-page anchor
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page.name}: links to missing files {missing}"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for line in page.read_text().splitlines():
        if m := re.match(r"^#{1,6}\s+(.*?)\s*$", line):
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-"))
    return out


def test_anchor_slugs_follow_github():
    page = ROOT / "docs" / "environment.md"
    assert "registered-ids" in _anchors(page)
    assert "how-the-model-is-built-choices-beyond-the-model-description" in _anchors(page)


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_link_anchors_exist(page: Path):
    missing = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target) or "#" not in target:
            continue
        path, anchor = target.split("#", 1)
        dest = page if not path else page.parent / path
        if dest.suffix == ".md" and dest.exists() and anchor not in _anchors(dest):
            missing.append(target)
    assert not missing, f"{page.name}: links to missing anchors {missing}"


# Names of the maintainers' private notes, which users do not have (spelled in parts so that this
# file does not itself point at them).
PRIVATE_REFERENCES = ("DES" + "IGN.md", "../" + "shared")


def test_no_page_points_at_the_private_design_notes():
    offenders = [
        str(p.relative_to(ROOT))
        for p in [*PAGES, *ROOT.glob("jmsra_env/**/*.py"), *ROOT.glob("agents/**/*.py"), *ROOT.glob("*.py"),
                  *ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py")]
        if any(ref in p.read_text() for ref in PRIVATE_REFERENCES)
    ]
    assert not offenders


PY_PAGES = [p for p in PAGES if FENCE.search(p.read_text())]


@pytest.mark.parametrize("page", PY_PAGES, ids=_ids(PY_PAGES))
def test_python_examples_run(page: Path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(FENCE.findall(page.read_text())):
        code = compile(block, f"{page.name}[python block {i}]", "exec")
        exec(code, namespace)  # noqa: S102 - the examples are ours
