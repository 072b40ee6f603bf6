"""One content-keyed, atomic, versioned disk cache of computed results: :class:`ResultCache`.

Every disk cache of the package goes through it (spectra, calibration histograms,
grid rows, skip-layer rows, sensitivity tables, TEAL greedy paths)::

    store = ResultCache("eval", version=CACHE_VERSION, fmt="json", enabled=cache)
    found = store.load(key, check=lambda row: row["tokens"] > 0)   # None: compute it
    if found is None:
        found = compute()
        store.save(key, found)

A file is ``cache_dir(kind) / f"{key}.{suffix}"`` (``suffix`` defaults to the format).
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
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cache import atomic_path, cache_dir
from .errors import CacheFileError

FORMATS = ("json", "csv", "npz", "pt")
META = "_cache"
"""Reserved entry holding ``{"key": ..., "version": ...}`` in JSON and torch files."""
NPZ_META = "__cache__"
CSV_HEADER = "#acttail-cache "
CSV_TRAILER = "#acttail-cache-end "

_WARNED: set = set()


class ResultCache:
    """Cached results of one kind (a folder under the cache root), in one format, at one version.

    Args:
        kind: the folder, ``cache_dir(kind)``.
        version: anything JSON-serialisable; files written with another version are ignored.
        fmt: one of :data:`FORMATS`.
        enabled: False turns the cache off: :meth:`load` returns None, :meth:`save` writes nothing.
    """

    def __init__(self, kind: str, version: Any = 1, fmt: str = "json", *, enabled: bool = True):
        if fmt not in FORMATS:
            raise ValueError(f"Unknown cache format {fmt!r}. Fix: use one of {', '.join(FORMATS)}.")
        self.kind, self.version, self.fmt, self.enabled = kind, version, fmt, bool(enabled)

    def __repr__(self) -> str:
        return (f"ResultCache({self.kind!r}, version={self.version!r}, fmt={self.fmt!r}, "
                f"enabled={self.enabled})")

    def path(self, key: str, suffix: str | None = None) -> Path:
        """``cache_dir(kind) / f"{key}.{suffix}"`` (``suffix`` defaults to the format); creates the folder."""
        return cache_dir(self.kind) / f"{key}.{suffix or self.fmt}"

    def load(self, key: str, check: Callable[[Any], bool] | None = None) -> Any | None:
        """The stored object for ``key``, or None (missing, other version, unreadable, or failing ``check``).

        ``check(obj)`` returning False or raising marks the file as inconsistent (warned once, like an
        unreadable file). Never raises for a bad file.
        """
        if not self.enabled:
            return None
        path = self.path(key)
        if not path.exists():
            return None
        try:
            meta, obj = _READERS[self.fmt](path)
        except Exception as exc:  # noqa: BLE001 -- any failure to read means: do not trust it
            _warn_once(path, f"unreadable: {type(exc).__name__}: {_first_line(exc)}")
            return None
        if not isinstance(meta, dict) or meta.get("version") != _plain(self.version):
            return None  # another version, or written before this helper: recompute silently
        if meta.get("key") != key:
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
        return obj

    def save(self, key: str, obj: Any) -> Path | None:
        """Write ``obj`` for ``key`` atomically; return the path (None, writing nothing, when disabled)."""
        if not self.enabled:
            return None
        path = self.path(key)
        with atomic_path(path) as tmp:
            _WRITERS[self.fmt](tmp, obj, {"key": key, "version": _plain(self.version)})
        return path


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

__all__ = ["FORMATS", "CacheFileError", "ResultCache"]
