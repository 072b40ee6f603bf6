"""The docs cannot drift: every module is documented, every committed result is listed, no outside notes are cited.

- docs/architecture.md names every module file of the package (as ``path/relative/to/acttail_lab.py``
  in backticks);
- the README links docs/architecture.md, docs/method.md and docs/notes.md, and its results table lists
  every CSV under data/results/;
- nothing a user's clone holds cites notes that live outside the repository (the forbidden strings are
  built at run time, so this file does not match itself).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "acttail_lab"
DOCS = ROOT / "docs"
README = ROOT / "README.md"
DOC_FILES = ("architecture.md", "method.md", "notes.md")

# built from parts so that this file never contains them verbatim
FORBIDDEN = ("../" + "shared", "METHOD" + ".md", "FIELD" + "-NOTES")
SCANNED = ("acttail_lab", "tests", "notebooks", "docs")
SCANNED_SUFFIXES = {".py", ".md", ".ipynb", ".txt", ".toml", ".cfg", ".json", ".yml", ".yaml"}


def module_files() -> list[str]:
    return sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def results_table(readme: str) -> str:
    """The README section with the committed-results table (up to the next ``## `` heading)."""
    match = re.search(r"^## Committed results.*?(?=^## )", readme, re.M | re.S)
    assert match, "README needs a '## Committed results ...' section with the results table"
    return match.group(0)


def test_docs_exist():
    for name in DOC_FILES:
        assert (DOCS / name).is_file(), f"docs/{name} is missing"


def test_architecture_names_every_module():
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    files = module_files()
    assert "measure/grid.py" in files  # the scan itself finds the package
    missing = [f for f in files if f"`{f}`" not in text]
    assert not missing, "docs/architecture.md: add one line per module (its one job) for:\n" + "\n".join(missing)


def test_architecture_names_every_layer():
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    layers = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert layers, "no subpackages found"
    missing = [layer for layer in layers if not re.search(rf"^### {re.escape(layer)}\s*$", text, re.M)]
    assert not missing, f"docs/architecture.md: add a '### <layer>' section for {missing}"


def test_architecture_mentions_only_existing_modules():
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    files = set(module_files())
    layers = {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    named = set(re.findall(r"`([a-z_]+(?:/[a-z_]+)*\.py)`", text))
    stale = sorted(n for n in named if n.split("/")[0] in layers and n not in files)
    assert not stale, f"docs/architecture.md names modules that no longer exist: {stale}"


def test_readme_links_the_docs():
    readme = README.read_text(encoding="utf-8")
    for name in DOC_FILES:
        assert f"](docs/{name})" in readme, f"README must link docs/{name}"
    head = readme.splitlines()[:15]
    assert any("make lab" in line for line in head) and any("make test" in line for line in head)


@pytest.mark.parametrize("csv", sorted(p.name for p in (ROOT / "data" / "results").glob("*.csv")))
def test_readme_lists_every_committed_csv(csv):
    assert f"`{csv}`" in results_table(README.read_text(encoding="utf-8")), \
        f"README results table: add `{csv}` with what it holds and the command that regenerates it"


def test_readme_regenerate_commands_exist():
    table = results_table(README.read_text(encoding="utf-8"))
    scripts = set(re.findall(r"python ((?:scripts|benchmarks)/[\w.]+\.py)", table))
    assert scripts, "the results table names no regenerate command"
    missing = sorted(s for s in scripts if not (ROOT / s).is_file())
    assert not missing, f"README names scripts that do not exist: {missing}"


def scanned_files():
    files = [README]
    for folder in SCANNED:
        files += [p for p in (ROOT / folder).rglob("*")
                  if p.is_file() and p.suffix in SCANNED_SUFFIXES and "__pycache__" not in p.parts
                  and ".ipynb_checkpoints" not in p.parts]
    return sorted(files)


def test_no_citation_of_notes_outside_the_repository():
    hits = []
    for path in scanned_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for word in FORBIDDEN:
                if word in line:
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {word}")
    assert not hits, ("cite the repository's docs instead (docs/method.md, docs/notes.md):\n" + "\n".join(hits))


def test_forbidden_scan_would_catch_a_citation(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("# see " + FORBIDDEN[1] + ", 'TopK'\n")
    assert any(word in sample.read_text() for word in FORBIDDEN)
    assert not any(word in Path(__file__).read_text() for word in FORBIDDEN)
