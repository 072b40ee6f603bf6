"""The committed example report (docs/example-report/gemma3-270m/): what `acttail-lab report --model gemma3-270m
--size standard` writes, committed whole (its summary page, pages, figures, tables with sidecars; not the executed
notebooks, which are notebook outputs), linked from the README, and its verdicts those of its own tables."""
import json
import re
from pathlib import Path

import pytest

from acttail_lab.report import verdicts
from acttail_lab.report.bootstrap import load_windows
from acttail_lab.report.results import load_results

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "example-report" / "gemma3-270m"
INDEX = EXAMPLE / "index.html"
RESULTS = EXAMPLE / "results"


def test_it_is_the_standard_report_of_gemma_and_every_link_resolves():
    manifest = json.loads((EXAMPLE / "report.json").read_text())
    assert manifest["model"] == "gemma3-270m" and manifest["size"] == "standard"
    links = re.findall(r"""(?:href|src)=['"]([^'"#]+)['"]""", INDEX.read_text())
    local = [link for link in links if "://" not in link]
    assert any(link.startswith("pages/") for link in local) and any(link.startswith("figures/") for link in local)
    missing = [link for link in local if not (EXAMPLE / link).is_file()]
    assert not missing, f"index.html links files that are not committed: {missing}"
    assert not list(EXAMPLE.rglob("*.ipynb")), "executed notebooks are notebook outputs: commit their pages only"


def test_every_table_has_a_clean_sidecar():
    tables = sorted(RESULTS.glob("*.csv"))
    assert any(t.name == "perplexity_gemma3-270m.csv" for t in tables)
    for table in tables:
        side = json.loads(Path(f"{table}.json").read_text())
        assert side["git_dirty"] is False and re.fullmatch(r"[0-9a-f]{40}", side["git_sha"]), table.name


def test_the_page_gives_the_verdicts_of_its_own_tables():
    runs = load_results(RESULTS / "perplexity_gemma3-270m.csv")
    table = verdicts.perplexity_verdicts(runs, load_windows("perplexity", "gemma3-270m", RESULTS))
    page = INDEX.read_text()
    assert verdicts.count_sentence(table) in page.replace("&#x27;", "'")
    for row in table.itertuples():
        cells = f"<td>{row.sparsity:.0%}</td><td>{row.value:.2f}</td><td>{row.baseline_value:.2f}</td>" \
                f"<td>{row.change:+.1f}%</td><td>[{row.low:+.1f}%, {row.high:+.1f}%]</td>"
        assert cells in page, f"{row.label} at {row.sparsity:.0%}: not as its tables give it"


@pytest.mark.parametrize("name", ["README.md", "docs/gallery.md"])
def test_the_readme_and_gallery_link_it(name):
    assert "docs/example-report/gemma3-270m/index.html" in (ROOT / name).read_text().replace("](example-report", "](docs/example-report")
