"""The repository stands on its own: its docs link only to files it has, state the numbers the
code computes, cite the paper, and name no file outside the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mammoseg.models import build_model, count_parameters
from mammoseg.report import PAPER_TABLE2
from mammoseg.version import __version__

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted((REPO / "docs").glob("*.md"))
#: The outside design file the docs once pointed to (spelt in two parts so this file does not mention it).
OUTSIDE_FILE = "DESIGN" + ".md"
PAPER_DOI = "10.1117/12.2628190"

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE_PATH = re.compile(r"`((?:docs|tests|benchmarks)/[\w./-]+\.(?:md|py|sh))`")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _tracked_files() -> list[Path]:
    """Every file git tracks in this checkout (that still exists in the work tree)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30).stdout
    return [REPO / name for name in out.decode("utf-8").split("\0") if name and (REPO / name).is_file()]


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces → hyphens."""
    kept = "".join(ch for ch in heading.strip().lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def _anchors(markdown: Path) -> set[str]:
    text = _FENCE.sub("", markdown.read_text(encoding="utf-8"))
    return {_slug(m[1]) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE)}


def _markdown_table(text: str, header_cell: str) -> list[list[str]]:
    """The body rows (cells stripped) of the first table whose header row has `header_cell`."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and header_cell in cells:
            rows = []
            for body in lines[i + 2:]:
                if not body.lstrip().startswith("|"):
                    break
                rows.append([c.strip() for c in body.strip().strip("|").split("|")])
            return rows
    raise AssertionError(f"no table with a {header_cell!r} column")


# --------------------------------------------------------------------------- stands alone


@pytest.mark.timeout(60)
def test_no_tracked_file_names_the_outside_design_file():
    needle = OUTSIDE_FILE.encode()
    offenders = []
    for path in _tracked_files():
        data = path.read_bytes()
        if needle in data:
            lines = [i for i, line in enumerate(data.splitlines(), start=1) if needle in line]
            offenders.append(f"{path.relative_to(REPO)}:{','.join(map(str, lines))}")
    assert not offenders, f"{OUTSIDE_FILE} is outside the repository; named in: {'; '.join(offenders)}"


@pytest.mark.timeout(30)
def test_relative_links_point_to_files_that_exist():
    broken = []
    for doc in [REPO / "README.md", *DOCS]:
        text = _FENCE.sub("", doc.read_text(encoding="utf-8"))
        targets = [m[1] for m in _LINK.finditer(text)]
        for target in targets:
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            dest = (doc.parent / path_part).resolve() if path_part else doc
            where = f"{doc.relative_to(REPO)} → {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{where} (no heading with that anchor)")
        for named in _CODE_PATH.findall(text):
            if not (REPO / named).exists():
                broken.append(f"{doc.relative_to(REPO)} → `{named}` (no such file)")
    assert not broken, "broken links: " + "; ".join(broken)


def test_getting_started_and_method_are_linked_from_the_readme():
    readme = REPO / "README.md"
    links = {m[1].partition("#")[0] for m in _LINK.finditer(readme.read_text(encoding="utf-8"))}
    assert {"docs/method.md", "docs/getting-started.md"} <= links


# --------------------------------------------------------------------------- licence and citation


def _pyproject_value(key: str) -> str:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    match = re.search(rf'^{key}\s*=\s*"([^"]+)"', project, re.MULTILINE)
    assert match, f"pyproject.toml: no {key} in [project]"
    return match[1]


def test_licence_file_is_the_licence_pyproject_declares():
    assert _pyproject_value("license") == "Apache-2.0"
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "Copyright 2026 the mammoseg authors" in text


def test_citation_cff_cites_the_software_and_the_paper():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    assert {"cff-version", "message", "title", "authors"} <= set(cff)
    assert cff["cff-version"] == "1.2.0"
    assert cff["title"] == "mammoseg" and cff["authors"]
    assert str(cff["version"]) == __version__  # pyproject.toml reads the version from mammoseg.version
    assert cff["license"] == _pyproject_value("license")
    works = [*cff.get("references", []), *([cff["preferred-citation"]] if "preferred-citation" in cff else [])]
    papers = [w for w in works if str(w.get("doi")) == PAPER_DOI]
    assert len(papers) == 1, f"CITATION.cff: the paper (doi {PAPER_DOI}) should be cited once, found {len(papers)}"
    paper = papers[0]
    assert paper["type"] in ("conference-paper", "article")
    assert paper["title"].startswith("Evaluation of different convolutional neural network encoder-decoder")
    assert [a.get("family-names") for a in paper["authors"][:2]] == ["Isosalo", "Mustonen"]
    assert (int(paper["volume"]), int(paper["year"])) == (12037, 2022)


# --------------------------------------------------------------------------- numbers in docs/method.md


@pytest.mark.timeout(120)
def test_parameter_counts_in_method_doc_are_the_built_models():
    rows = _markdown_table((REPO / "docs" / "method.md").read_text(encoding="utf-8"), "whole model")
    assert rows, "docs/method.md: the parameter table has no rows"
    seen = set()
    for model, channels, encoder, decoder, whole in rows:
        enc_name, dec_name = model.lower().split("-")
        built = build_model(enc_name, dec_name, in_channels=int(channels))
        stated = tuple(int(n.replace(",", "")) for n in (encoder, decoder, whole))
        counted = (count_parameters(built.encoder), count_parameters(built.decoder),
                   sum(p.numel() for p in built.parameters()))
        assert stated == counted, f"docs/method.md, {model} with {channels} channel(s): {stated} vs built {counted}"
        seen.add((model, int(channels)))
    paper_models = {("ResNet34-UNet", 3), ("ResNet34-FPN", 3), ("ResNet22-UNet", 1), ("ResNet22-FPN", 1)}
    assert paper_models <= seen


def test_table2_in_method_doc_is_the_reports_table():
    rows = _markdown_table((REPO / "docs" / "method.md").read_text(encoding="utf-8"), "DCS (mean ± SD)")
    stated = []
    for dataset, model, weights, dcs in rows:
        numbers = [float(x) for x in re.findall(r"\d+\.\d+", dcs)]
        stated.append((dataset.split()[0], model, weights, numbers[0], numbers[1] if len(numbers) > 1 else None))
    assert stated == list(PAPER_TABLE2)
