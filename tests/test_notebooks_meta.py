"""Every notebook is indexed in the README, run by CI, thin, and committed clean (plenoptic style)."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAX_CELL_LINES = 12
"""Most code lines (non-blank, non-comment, magics included) in one notebook cell: a thin notebook calls the
package and shows the result; anything longer is analysis that belongs in acttail_lab (with tests). Each line
of a call wrapped over several lines counts, so write calls compactly. The `parameters` cell is held to it too."""


def code_lines(source) -> int:
    """Non-blank lines of a cell's source (a string or nbformat's list of strings) that are not ``#`` comments."""
    text = "".join(source) if isinstance(source, list) else source
    return sum(1 for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def long_cells(nb: dict) -> dict:
    """``{cell id (or index among code cells): code lines}`` for the code cells over :data:`MAX_CELL_LINES`."""
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    return {c.get("id", i): code_lines(c["source"]) for i, c in enumerate(code)
            if code_lines(c["source"]) > MAX_CELL_LINES}


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4


def test_ci_runs_every_notebook():
    makefile = (ROOT / "Makefile").read_text()
    rule = re.search(r"^notebooks:.*?\n((?:\t.*\n)+)", makefile, re.M)
    assert rule and "--nbmake" in rule.group(1) and "ACTTAIL_FAST=1" in rule.group(1)
    assert re.search(r"--nbmake[^\n]*\snotebooks\s*$", rule.group(1), re.M), "nbmake must run the whole folder"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_indexed_clean_and_parameterised(path):
    assert re.match(r"\d\d_[a-z0-9_]+\.ipynb$", path.name)
    assert f"`{path.stem}`" in (ROOT / "README.md").read_text(), "add the notebook to the README index"
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert "widgets" not in nb["metadata"], "strip widget state (make strip)"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    first = code[0]
    assert "parameters" in first["metadata"].get("tags", []), "first code cell must be tagged `parameters`"
    assert "ACTTAIL_FAST" in "".join(first["source"])
    # thin: no function or class definitions in notebooks; logic lives in acttail_lab
    for cell in code:
        assert not re.search(r"^\s*(def|class) ", "".join(cell["source"]), re.M), f"logic in {path.name}"


def test_code_lines_counts_code_not_comments_or_blanks():
    cell = ["# a comment\n", "\n", "%matplotlib inline\n", "x = f(1,  # trailing comment\n", "      2)\n",
            "    # indented comment\n", "   \n", "x"]
    assert code_lines(cell) == 4
    assert code_lines("".join(cell)) == 4
    assert code_lines("") == 0 and code_lines("# only\n\n") == 0


def test_code_lines_flags_a_long_cell():
    long_cell = "\n".join(f"value_{i} = {i}" for i in range(MAX_CELL_LINES + 1))
    assert code_lines(long_cell) == MAX_CELL_LINES + 1 > MAX_CELL_LINES
    assert code_lines("\n# note\n".join(f"v{i} = {i}" for i in range(MAX_CELL_LINES))) == MAX_CELL_LINES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_cells_are_short(path):
    long = long_cells(json.loads(path.read_text()))
    assert not long, (f"{path.name}: code cell(s) {long} (id: lines) exceed {MAX_CELL_LINES} code lines; "
                      "move the logic into acttail_lab (report/ or plots/) and call it")


def test_long_cells_flags_only_long_code_cells():
    lines = [f"x{i} = {i}\n" for i in range(MAX_CELL_LINES + 1)]
    nb = {"cells": [dict(cell_type="markdown", id="m", source=lines),  # prose may be long
                    dict(cell_type="code", id="ok", source=["# why\n", "\n"] + lines[:MAX_CELL_LINES]),
                    dict(cell_type="code", id="long", source=lines),
                    dict(cell_type="code", id="wrapped", source=["f(a,\n"] + ["  b,\n"] * MAX_CELL_LINES + ["  c)"])]}
    assert long_cells(nb) == {"long": MAX_CELL_LINES + 1, "wrapped": MAX_CELL_LINES + 2}


WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"


def test_no_notebook_or_documented_export_saves_widget_state():
    """Widget state is megabytes no page can show (an exported 03 was 20.8 MB of it): no committed notebook
    carries it, and every nbconvert command in the README turns nbclient's default store_widget_state=True off."""
    for path in NOTEBOOKS:
        text = path.read_text()
        assert "widgets" not in json.loads(text)["metadata"] and WIDGET_STATE_MIME not in text, \
            f"{path.name} holds widget state: run make strip"
    commands = re.findall(r"`(jupyter nbconvert [^`]*)`", (ROOT / "README.md").read_text())
    assert commands and all("--ExecutePreprocessor.store_widget_state=False" in c for c in commands)


def test_make_strip_removes_saved_widget_state(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("nbstripout")
    assert "nbstripout" in re.search(r"^strip:.*\n\t(.*)", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    nb = json.loads(NOTEBOOKS[0].read_text())
    nb["metadata"]["widgets"] = {WIDGET_STATE_MIME: {"state": {"model": {"value": 1}}, "version_major": 2}}
    path = tmp_path / "saved.ipynb"
    path.write_text(json.dumps(nb))
    subprocess.run([sys.executable, "-m", "nbstripout", "--drop-empty-cells", str(path)], cwd=ROOT, check=True)
    assert "widgets" not in json.loads(path.read_text())["metadata"]


def test_explorer_notebook_shows_a_static_view_below_the_live_widget():
    nb = json.loads((ROOT / "notebooks" / "03_alpha_to_sparsity_explorer.ipynb").read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    live = next(i for i, src in enumerate(code) if ".widget()" in src)
    assert any("plot_explorer_view(" in src for src in code[live + 1:]), "add the still picture after the widget"
