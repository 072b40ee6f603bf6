"""One content-keyed, atomic, versioned disk cache of computed results: :class:`ResultCache`.

Every disk cache of the package goes through it (spectra, calibration histograms,
grid rows, skip-layer rows, sensitivity tables, TEAL greedy paths)::

    store = ResultCache("eval", version=CACHE_VERSION, fmt="json", enabled=cache)
    found = store.load(key, check=lambda row: row["tokens"] > 0)   # None: compute it
    if found is None:
        found = compute()
        store.save(key, found)

A file is ``cache_dir(kind) / f"{key}.{stamp}.{suffix}"`` (``suffix`` defaults to the format). The
``stamp`` (:func:`acttail_lab.core.environment.cache_stamp`) covers the format ``version``, the versions of
torch, transformers, tokenizers, gguf, safetensors and numpy, and the code version of the kind's measuring
path, so a result is found again only in the environment and with the code that made it. A result made under
another stamp is never reused without a word: :meth:`ResultCache.load` warns (once per kind) and recomputes,
unless ``reuse_other=True`` or ``ACTTAIL_CACHE_REUSE=other-environment`` asks to reuse it, which
:func:`cache_summary` (and so every sidecar) records. Every file also stores who made it
(:func:`acttail_lab.core.environment.made_by`: git SHA, dirty flag, lock hash).
Each file records its key and version inside it (a ``"_cache"`` entry of a JSON
or torch dict, a ``__cache__`` array of an ``.npz``, a first line of a CSV, whose
last line counts its rows), and :meth:`ResultCache.load` returns None, never raises,
when the file is missing, from another version (or written before this helper),
or unreadable / truncated / failing ``check``; the last two warn once per file.
Files are written atomically (:func:`acttail_lab.core.cache.atomic_path`), so an
interrupted run never leaves a half-written file. With ``enabled=False`` nothing
is read, written, or created.

Formats (``fmt``): ``"json"`` (a dict of JSON values), ``"csv"`` (a pandas
DataFrame, written with ``to_csv(index=False)``, read back with ``read_csv``),
``"npz"`` (a dict of numpy arrays, no pickles), ``"pt"`` (a dict of tensors,
numbers and strings, ``torch.save`` / ``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import io
import json
import os
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cache import atomic_path, cache_dir
from .environment import cache_stamp, made_by, stamp_fields
from .errors import CacheFileError

FORMATS = ("json", "csv", "npz", "pt")
META = "_cache"
"""Reserved entry holding ``{"key": ..., "version": ...}`` in JSON and torch files."""
NPZ_META = "__cache__"
CSV_HEADER = "#acttail-cache "
CSV_TRAILER = "#acttail-cache-end "

REUSE_VARIABLE = "ACTTAIL_CACHE_REUSE"
"""Set to ``other-environment`` to reuse results made under another stamp (recorded in every sidecar)."""
REUSE_VALUE = "other-environment"

_WARNED: set = set()
_STATS: dict[str, Counter] = {"hits": Counter(), "computed": Counter(), "reused_other": Counter(),
                              "ignored_other": Counter()}
_MADE_BY: Counter = Counter()


def reuse_requested() -> bool:
    """Whether ``$ACTTAIL_CACHE_REUSE`` asks to reuse results made under another stamp."""
    value = os.environ.get(REUSE_VARIABLE, "").strip()
    if value in ("", "0", "no", "never"):
        return False
    if value == REUSE_VALUE:
        return True
    raise ValueError(f"{REUSE_VARIABLE}={value!r} is not understood. Fix: unset it (recompute results made "
                     f"under another environment or code version) or set it to {REUSE_VALUE!r}.")


def cache_summary() -> dict[str, object]:
    """What this process took from the caches and computed, for a sidecar.

    ``state`` is ``"empty"`` when nothing was read from any cache (every result computed in this process),
    else ``"warm"``; ``reused_other_environment`` counts results made under another environment or code
    version that were reused on request; ``made_by`` lists, per (git SHA, dirty, lock hash), how many of the
    results read or computed came from it.
    """
    hits, reused = sum(_STATS["hits"].values()), sum(_STATS["reused_other"].values())
    return {
        "state": "empty" if hits == 0 and reused == 0 else "warm",
        "read": dict(_STATS["hits"]), "computed": dict(_STATS["computed"]),
        "reused_other_environment": dict(_STATS["reused_other"]),
        "ignored_other_environment": dict(_STATS["ignored_other"]),
        "reuse_option": os.environ.get(REUSE_VARIABLE, "") or None,
        "made_by": [{"git_sha": sha, "git_dirty": dirty, "lock_sha256": lock, "results": n}
                    for (sha, dirty, lock), n in _MADE_BY.most_common()],
    }


def reset_cache_summary() -> None:
    """Forget what :func:`cache_summary` counted (tests, or a script that starts a new table)."""
    for counter in _STATS.values():
        counter.clear()
    _MADE_BY.clear()


def _count_made_by(meta: dict | None) -> None:
    who = (meta or {}).get("made_by") or {}
    _MADE_BY[(who.get("git_sha"), who.get("git_dirty"), who.get("lock_sha256"))] += 1


class ResultCache:
    """Cached results of one kind (a folder under the cache root), in one format, at one version.

    Args:
        kind: the folder, ``cache_dir(kind)``.
        version: anything JSON-serialisable; files written with another version are ignored.
        fmt: one of :data:`FORMATS`.
        enabled: False turns the cache off: :meth:`load` returns None, :meth:`save` writes nothing.
        reuse_other: reuse a result made under another stamp (environment or code version) when none
            exists under this one; None reads ``$ACTTAIL_CACHE_REUSE``.
    """

    def __init__(self, kind: str, version: Any = 1, fmt: str = "json", *, enabled: bool = True,
                 reuse_other: bool | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"Unknown cache format {fmt!r}. Fix: use one of {', '.join(FORMATS)}.")
        self.kind, self.version, self.fmt, self.enabled = kind, version, fmt, bool(enabled)
        self.stamp = cache_stamp(kind, _plain(version))
        self.reuse_other = reuse_requested() if reuse_other is None else bool(reuse_other)

    def __repr__(self) -> str:
        return (f"ResultCache({self.kind!r}, version={self.version!r}, fmt={self.fmt!r}, "
                f"enabled={self.enabled}, stamp={self.stamp!r})")

    def path(self, key: str, suffix: str | None = None) -> Path:
        """``cache_dir(kind) / f"{key}.{stamp}.{suffix}"`` (``suffix`` defaults to the format); creates the folder."""
        return cache_dir(self.kind) / f"{key}.{self.stamp}.{suffix or self.fmt}"

    def _others(self, key: str) -> list[Path]:
        """Files of ``key`` made under other stamps (or before stamps existed), newest first."""
        mine = self.path(key)
        found = [p for p in mine.parent.glob(f"{key}.*{self.fmt}") if p != mine and not p.name.startswith(".")]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    def load(self, key: str, check: Callable[[Any], bool] | None = None) -> Any | None:
        """The stored object for ``key``, or None (missing, other version, unreadable, or failing ``check``).

        ``check(obj)`` returning False or raising marks the file as inconsistent (warned once, like an
        unreadable file). Never raises for a bad file.
        """
        if not self.enabled:
            return None
        path = self.path(key)
        if not path.exists():
            return self._load_other(key, check)
        found = self._read(path, key, check)
        if found is not None:
            _STATS["hits"][self.kind] += 1
            _count_made_by(found[0])
            return found[1]
        return None

    def _load_other(self, key: str, check) -> Any | None:
        """A result of ``key`` made under another stamp (same format version, another environment or code
        version): reused only on request, else warned about once per kind and recomputed. Files of another
        format version, or written before stamps existed without one, are ignored silently."""
        others = [(p, _peek_meta(p, self.fmt)) for p in self._others(key)]
        others = [(p, m) for p, m in others if isinstance(m, dict) and m.get("key") == key
                  and m.get("version") == _plain(self.version)]
        if not others:
            return None
        if self.reuse_other:
            for other, _ in others:
                found = self._read(other, key, check, stamped=False)
                if found is not None:
                    _STATS["reused_other"][self.kind] += 1
                    _count_made_by(found[0])
                    _warn_kind(self.kind, "reused", f"{other.name}, made under {_describe_other(found[0])}")
                    return found[1]
            return None
        _STATS["ignored_other"][self.kind] += 1
        _warn_kind(self.kind, "ignored", f"e.g. {others[0][0].name}, made under {_describe_other(others[0][1])}")
        return None

    def _read(self, path: Path, key: str, check, stamped: bool = True) -> tuple[dict, Any] | None:
        """(meta, object) of a file, or None: unreadable, another format version, another key, failing ``check``."""
        try:
            meta, obj = _READERS[self.fmt](path)
        except Exception as exc:  # noqa: BLE001 -- any failure to read means: do not trust it
            _warn_once(path, f"unreadable: {type(exc).__name__}: {_first_line(exc)}")
            return None
        if not isinstance(meta, dict) or meta.get("version") != _plain(self.version):
            return None  # another version, or written before this helper: recompute silently
        if meta.get("key") != key:
            if stamped:
                _warn_once(path, f"it holds key {meta.get('key')!r}, not {key!r}")
            return None
        if check is not None:
            try:
                ok = bool(check(obj))
            except Exception as exc:  # noqa: BLE001
                ok, why = False, f"check failed: {type(exc).__name__}: {_first_line(exc)}"
            else:
                why = "its values fail the consistency check"
            if not ok:
                _warn_once(path, why)
                return None
        return meta, obj

    def save(self, key: str, obj: Any) -> Path | None:
        """Write ``obj`` for ``key`` atomically; return the path (None, writing nothing, when disabled)."""
        if not self.enabled:
            return None
        path = self.path(key)
        meta = {"key": key, **stamp_fields(self.kind, _plain(self.version)), "made_by": made_by()}
        with atomic_path(path) as tmp:
            _WRITERS[self.fmt](tmp, obj, meta)
        _STATS["computed"][self.kind] += 1
        _count_made_by(meta)
        return path


def _peek_meta(path: Path, fmt: str) -> dict | None:
    try:
        return _READERS[fmt](path)[0]
    except Exception:  # noqa: BLE001 -- only for a message
        return None


def _describe_other(meta: dict | None) -> str:
    """How another file's stamp differs from the current one, e.g. ``transformers 5.24.0 (now 5.25.0)``."""
    if not isinstance(meta, dict) or "env" not in meta:
        return "an older acttail-lab that did not record its environment"
    from .environment import environment_versions

    now, then = environment_versions(), meta.get("env") or {}
    parts = [f"{name} {then.get(name)} (now {version})" for name, version in now.items() if then.get(name) != version]
    who = (meta.get("made_by") or {}).get("git_sha")
    if not parts:
        parts.append(f"code version {meta.get('code')} of its measuring path" + (f", git {who[:10]}" if who else ""))
    return ", ".join(parts) or "another stamp"


def _warn_kind(kind: str, what: str, detail: str) -> None:
    ident = ("kind", kind, what)
    if ident in _WARNED:
        return
    _WARNED.add(ident)
    if what == "reused":
        text = (f"Reusing cached {kind!r} results made under another environment or code version, as "
                f"{REUSE_VARIABLE}={REUSE_VALUE} asks ({detail}); sidecars record how many.")
    else:
        text = (f"Cached {kind!r} results exist for these inputs but were made under another environment or code "
                f"version ({detail}); recomputing them. To reuse them instead, set {REUSE_VARIABLE}={REUSE_VALUE} "
                "(sidecars then record it).")
    warnings.warn(text, stacklevel=4)


def _plain(version: Any) -> Any:
    """``version`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(version, default=str))


def _first_line(exc: BaseException, limit: int = 160) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else ""


def _warn_once(path: Path, why: str) -> None:
    try:
        stat = path.stat()
        ident = (str(path), stat.st_mtime_ns, stat.st_size)
    except OSError:
        ident = (str(path), None, None)
    if ident in _WARNED:
        return
    _WARNED.add(ident)
    warnings.warn(f"Ignoring unreadable or inconsistent cache file {path} ({why}); recomputing it.",
                  stacklevel=4)


def _need_dict(obj: Any, fmt: str) -> dict:
    if not isinstance(obj, dict) or META in obj:
        raise TypeError(f"A {fmt} cache entry must be a dict without a {META!r} entry, not {type(obj).__name__}.")
    return obj


# --------------------------------------------------------------------------- formats
def _write_json(tmp: Path, obj: dict, meta: dict) -> None:
    payload = {**_need_dict(obj, "json"), META: meta}
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")


def _read_json(path: Path):
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise CacheFileError("not a JSON object")
    meta = data.pop(META, None)
    return meta, data


def _write_csv(tmp: Path, df, meta: dict) -> None:
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"A csv cache entry must be a pandas DataFrame, not {type(df).__name__}.")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(CSV_HEADER + json.dumps(meta, sort_keys=True, default=str) + "\n")
        df.to_csv(fh, index=False)
        fh.write(CSV_TRAILER + json.dumps({"rows": len(df)}) + "\n")


def _read_csv(path: Path):
    import pandas as pd

    text = path.read_text(encoding="utf-8")
    first, _, rest = text.partition("\n")
    if not first.startswith(CSV_HEADER):
        return None, None  # written before this helper: not this version
    meta = json.loads(first[len(CSV_HEADER):])
    body, _, last = rest.rstrip("\n").rpartition("\n")
    if not last.startswith(CSV_TRAILER):
        raise CacheFileError("truncated (no end line)")
    rows = json.loads(last[len(CSV_TRAILER):])["rows"]
    df = pd.read_csv(io.StringIO(body + "\n"))
    if len(df) != rows:
        raise CacheFileError(f"{len(df)} rows, the end line says {rows}")
    return meta, df


def _write_npz(tmp: Path, arrays: dict, meta: dict) -> None:
    import numpy as np

    if NPZ_META in _need_dict(arrays, "npz"):
        raise TypeError(f"An npz cache entry must not hold a {NPZ_META!r} array.")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays, **{NPZ_META: np.array(json.dumps(meta, sort_keys=True, default=str))})


def _read_npz(path: Path):
    import numpy as np

    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as data:  # our handle: closed on any error
        if NPZ_META not in data.files:
            return None, None
        meta = json.loads(str(data[NPZ_META]))
        arrays = {name: data[name] for name in data.files if name != NPZ_META}
    return meta, arrays


def _write_pt(tmp: Path, obj: dict, meta: dict) -> None:
    import torch

    torch.save({**_need_dict(obj, "pt"), META: meta}, tmp)


def _read_pt(path: Path):
    import torch

    data = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(data, dict):
        raise CacheFileError("not a dict")
    meta = data.pop(META, None)
    return meta, data


_WRITERS = {"json": _write_json, "csv": _write_csv, "npz": _write_npz, "pt": _write_pt}
_READERS = {"json": _read_json, "csv": _read_csv, "npz": _read_npz, "pt": _read_pt}

__all__ = ["FORMATS", "REUSE_VALUE", "REUSE_VARIABLE", "CacheFileError", "ResultCache", "cache_summary",
           "reset_cache_summary", "reuse_requested"]
