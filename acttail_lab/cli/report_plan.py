"""What ``acttail-lab report`` will run, checked before any model loads, and about how long it will take.

* :data:`SIZES`: ``quick`` (minutes on a laptop CPU for a 135M model: CI runs it), ``standard`` (the example
  report: an afternoon on a CPU for a 270M model) and ``full`` (the committed grids' sizes).
* :func:`plan_report` checks the inputs (:func:`check_model`, :func:`check_corpus_length`, :func:`check_out`)
  and returns a :class:`ReportPlan`, whose :func:`estimate` is a table of parts and seconds.

The estimate: a forward pass costs ``2 x parameters`` FLOPs per token; this machine's speed is *measured* when
the plan is made (a one-thread float32 matrix product, :func:`measured_flops`), and each part multiplies by a
work factor measured once on the committed runs (TopK hooks and the loss cost about 1.3x a plain forward).
Expect the total within a factor of about 2: a busy machine, a GPU or another thread count moves it.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import ActTailError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MANIFEST = "report.json"
"""The file in a report folder that names its model, size and settings (and so guards it)."""
CHARS_PER_TOKEN = 3.0
"""Fewest characters of text per token assumed when checking a corpus's length before its tokenizer loads
(English BPE text gives about 4; a corpus that falls short at 3 surely falls short)."""
TOPK_OVERHEAD = 1.3
"""Cost of a TopK-hooked forward with its loss against a plain forward (``2 x`` the weights multiplied per token,
:func:`core.model_size.forward_parameters`): SmolLM2-135M rows of 16,352 tokens took 65-75 s on one free AVX2 core,
about 1.3x the plain forward at that core's matrix-product speed."""


@dataclass(frozen=True)
class ReportSize:
    """The sizes of one report: tokens and windows, targets, strategies, zero-shot tasks, notebooks."""

    name: str
    tokens: int  # evaluation tokens of the perplexity grid (rounded down to whole windows)
    window: int
    targets: tuple[float, ...]
    strategies: tuple[str, ...]
    zeroshot_tasks: tuple[str, ...]
    zeroshot_limit: int  # examples per task
    cost_table: bool  # measure the TopK error of every projection (the sensitivity notebook)
    notebooks: tuple[str, ...] = ("01", "02", "07", "08")  # executed notebooks (by number)


SIZES = {
    "quick": ReportSize("quick", tokens=1024, window=256, targets=(0.5, 0.7),
                        strategies=("uniform", "acttail", "acttail-block"), zeroshot_tasks=("piqa",),
                        zeroshot_limit=20, cost_table=False, notebooks=("02", "08")),
    "standard": ReportSize("standard", tokens=8192, window=512, targets=(0.5, 0.6, 0.7, 0.8),
                           strategies=("uniform", "acttail", "acttail-ks", "acttail-block", "teal-greedy-fine"),
                           zeroshot_tasks=("piqa", "arc_easy"), zeroshot_limit=200, cost_table=True),
    "full": ReportSize("full", tokens=16384, window=512, targets=(0.4, 0.5, 0.6, 0.7, 0.8),
                       strategies=("uniform", "acttail", "acttail-ks", "acttail-block", "teal-greedy-fine", "wina",
                                   "rotated-uniform", "shuffled"),
                       zeroshot_tasks=("piqa", "arc_easy", "hellaswag"), zeroshot_limit=500, cost_table=True),
}


@dataclass
class ReportPlan:
    """A checked report: what runs, on what, into which folder (``parameters`` None: unknown before loading)."""

    model: str
    corpus: str
    size: ReportSize
    out: Path
    parameters: int | None  # all parameters in the model's files
    forward: int | None  # weights one token's forward multiplies (projections + head)
    projections: int | None  # weights of the projections alone (block-local work)
    spectra_flops: float | None
    flops: float  # measured float32 FLOP/s of this machine, one thread
    layers: int | None = None  # decoder layers (from the tensor names)
    notes: list[str] = field(default_factory=list)

    @property
    def model_key(self) -> str:
        """The model's name in result file names: a built-in name, else a file-safe form of the path or id."""
        from ..core.builtin_models import BUILTIN_MODELS

        if self.model in BUILTIN_MODELS:
            return self.model
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.model.strip("/~.")).strip("_") or "model"

    @property
    def label(self) -> str:
        """The model's name in sentences: a built-in model's own name (``Gemma 3 270M``), else as given."""
        from ..core.builtin_models import BUILTIN_MODELS

        found = BUILTIN_MODELS.get(self.model)
        return found.description.split(" (")[0] if found else self.model

    @property
    def command(self) -> str:
        """The command line that makes this report (for sidecars)."""
        import shlex

        return shlex.join(["acttail-lab", "report", "--model", self.model, "--corpus", self.corpus, "--size",
                           self.size.name, "--out", str(self.out)])


def check_model(model: str) -> str:
    """``model`` if it names something loadable (built-in, ``.gguf``/``.safetensors`` file, folder, Hub id)."""
    from ..core.builtin_models import BUILTIN_MODELS

    if model in BUILTIN_MODELS:
        return model
    path = Path(os.path.expanduser(model))
    if path.exists():
        from ..core.model_files import check_model_files

        check_model_files(path)
        return model
    if HUB_ID.match(model) and not model.startswith((".", "/", "~")):
        return model
    raise ActTailError(f"Unknown model {model!r}: not a built-in ({', '.join(BUILTIN_MODELS)}), not an existing "
                       "file or folder, not a Hugging Face id (owner/name). Fix: pass one of those, e.g. "
                       "--model smollm2-135m.")


def check_corpus_length(corpus: str, size: ReportSize) -> int:
    """Characters of the corpus's evaluation split; an error when it cannot hold ``size.tokens`` tokens."""
    from ..core.corpus import check_corpus, corpus_text

    check_corpus(corpus)
    chars = len(corpus_text(corpus, "evaluation"))
    smaller = ", ".join(name for name, s in SIZES.items() if s.tokens < size.tokens)
    needed = int(size.tokens * CHARS_PER_TOKEN)
    if chars < needed:
        raise ActTailError(f"Corpus {corpus!r} is too short for --size {size.name}: its evaluation half has {chars:,} "
                           f"characters, and {size.tokens:,} tokens need at least about {needed:,}. Fix: pass a "
                           f"longer text, or a smaller --size ({smaller or 'none smaller'}).")
    return chars


def check_out(out: Path, model: str, size: ReportSize) -> None:
    """Refuse a folder holding another model's report (or other files); the same model's report resumes."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ActTailError(f"--out {out} is a file. Fix: pass a folder for the report, e.g. "
                           f"{out.with_suffix('')}-report.")
    manifest = out / MANIFEST
    if manifest.exists():
        found = json.loads(manifest.read_text())
        if found.get("model") != model or found.get("size") != size.name:
            raise ActTailError(f"--out {out} holds the {found.get('size')} report of {found.get('model')!r}, not the "
                               f"{size.name} report of {model!r}. Fix: choose another folder (or delete that one).")
        return
    if any(out.iterdir()):
        raise ActTailError(f"--out {out} is not empty and holds no report. Fix: choose a new or empty folder.")


NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
"""The repository's notebooks, which a report executes (an installed wheel has none)."""


def check_notebooks(size: ReportSize, folder: Path = NOTEBOOKS) -> list[Path]:
    """The notebooks ``size`` executes; an error naming the fix when the repository's notebooks are not there."""
    found = [next(iter(sorted(folder.glob(f"{number}_*.ipynb"))), None) for number in size.notebooks]
    if not folder.is_dir() or None in found:
        missing = [n for n, f in zip(size.notebooks, found) if f is None]
        raise ActTailError(f"The report executes notebooks {', '.join(size.notebooks)} from {folder}, and "
                           f"{', '.join(missing) or 'they'} are not there (a pip-installed package has no notebooks). "
                           "Fix: run it from a clone of the repository (pip install -e .).")
    return found


def measured_flops(seconds: float = 0.2) -> float:
    """Float32 FLOP/s of one thread of this machine: a 512 x 1024 by 1024 x 1024 matrix product, best of a few."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(512, 1024), torch.randn(1024, 1024)
        best, spent = float("inf"), 0.0
        while spent < seconds:
            start = time.perf_counter()
            a @ b
            took = time.perf_counter() - start
            best, spent = min(best, took), spent + took
    finally:
        torch.set_num_threads(threads)
    return 2 * 512 * 1024 * 1024 / best


def plan_report(model: str, corpus: str, size: str, out: str | os.PathLike) -> ReportPlan:
    """Check every input (no model loads) and measure this machine's speed; a :class:`ReportPlan`."""
    from ..core.model_size import forward_parameters, projection_shapes, spectra_flops, tensor_shapes

    if size not in SIZES:
        raise ActTailError(f"Unknown --size {size!r}. Fix: choose one of {', '.join(SIZES)}.")
    chosen = SIZES[size]
    check_notebooks(chosen)
    model = check_model(model)
    check_corpus_length(corpus, chosen)
    out = Path(out).expanduser().resolve()  # absolute: the notebooks run in their own folder
    check_out(out, model, chosen)
    shapes = tensor_shapes(model)
    known = shapes is not None
    plan = ReportPlan(model, corpus, chosen, out, sum(math.prod(s) for s in shapes.values()) if known else None,
                      forward_parameters(shapes) if known else None,
                      sum(m * n for m, n in projection_shapes(shapes)) if known else None,
                      spectra_flops(shapes) if known else None,
                      measured_flops(), layers=_layers(shapes) if known else None)
    if plan.parameters is None:
        plan.notes.append("the parameter count is unknown until the model loads: no time estimate")
    return plan


def _layers(shapes: dict) -> int | None:
    """Decoder layers, from tensor names (``blk.N.`` in GGUF, ``layers.N.`` in Hugging Face files)."""
    found = {int(m.group(1)) for name in shapes for m in [re.search(r"(?:^blk|layers)\.(\d+)\.", name)] if m}
    return max(found) + 1 if found else None


def estimate(plan: ReportPlan) -> list[dict]:
    """One dict per part: ``part``, ``work`` (what it computes) and ``seconds`` (None when unknown).

    FLOPs per part: a forward pass multiplies ``plan.forward`` weights per token, a block-local step (greedy path,
    TopK error of one projection) only the projections' ``plan.projections``; each at ``2`` FLOPs per weight, times
    :data:`TOPK_OVERHEAD`, at the measured ``plan.flops``."""
    size = plan.size
    rows = 1 + len(size.strategies) * len(size.targets)
    runs = 1 + len(size.strategies)
    greedy = any("teal-greedy" in s for s in size.strategies)
    loss_forwards = 2 * 7 * -(-(plan.layers or 0) // 3)
    forward, local = plan.forward or 0, plan.projections or 0
    parts = [
        ("spectra", "eigenvalues of every projection's W^T W (once; three xmin rules fit them)", None),
        ("perplexity", f"{rows} runs x {size.tokens:,} tokens", rows * size.tokens * forward),
        ("greedy path", "TEAL's fine greedy path: ~880 block forwards x 256 tokens per layer",
         880 * 256 * local if greedy else 0),
        ("sensitivity", f"TopK error of every projection x 12 levels on 2,048 tokens; loss increase: {loss_forwards} "
                        "forwards of 512 tokens",
         (12 * 2048 * local + loss_forwards * 512 * forward) if size.cost_table else 0),
        ("zero-shot", f"{runs} runs at 50% x {', '.join(size.zeroshot_tasks)} x {size.zeroshot_limit} examples "
                      "(~3 choices x ~60 tokens)",
         runs * len(size.zeroshot_tasks) * size.zeroshot_limit * 180 * forward),
        ("notebooks", f"notebooks {', '.join(size.notebooks)} from the results, and their pages", None),
    ]
    out = []
    for part, work, weights in parts:
        if part == "spectra":
            seconds = None if plan.spectra_flops is None else plan.spectra_flops / plan.flops
        elif part == "notebooks":
            seconds = 30.0 * len(size.notebooks)
        else:
            seconds = None if plan.forward is None else weights * 2 * TOPK_OVERHEAD / plan.flops
        out.append({"part": part, "work": work, "seconds": seconds})
    return out


def plan_text(plan: ReportPlan) -> str:
    """What will run, on what, and the estimate, as lines for the terminal."""
    size = plan.size
    params = "unknown" if plan.parameters is None else f"{plan.parameters / 1e6:,.0f}M"
    lines = [f"acttail-lab report: {plan.model} ({params} parameters) on {plan.corpus!r}, size {size.name}, "
             f"into {plan.out}",
             f"  strategies {', '.join(size.strategies)} at {', '.join(f'{t:.0%}' for t in size.targets)}; "
             f"{size.tokens:,} tokens in {size.window}-token windows",
             f"  this machine: {plan.flops / 1e9:.0f} GFLOP/s float32 on one thread (measured now)"]
    total = 0.0
    for row in estimate(plan):
        seconds = row["seconds"]
        if seconds:
            total += seconds
        shown = ("?" if seconds is None else "-" if seconds == 0
                 else f"~{seconds / 60:.0f} min" if seconds >= 60 else f"~{seconds:.0f} s")
        lines.append(f"  {row['part']:12s} {shown:>9s}  {row['work']}")
    lines.append(f"  total about {total / 60:.0f} min (within a factor of ~2; cached parts of an earlier run are "
                 "skipped)")
    lines += [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)
