"""Integrity of model files before anything loads them: a truncated or corrupt GGUF or safetensors file.

Each check reads only the file's header, computes where its last tensor must end, and compares that with the
file's size, so a half-downloaded file is refused in milliseconds with an error that says "re-fetch", instead of
a ``ValueError: cannot reshape array ...`` deep inside a loader minutes later.

* :func:`check_gguf`: GGUF v2/v3 (magic, key-value metadata, tensor infos, alignment; tensor byte sizes from
  gguf's block sizes per quantisation type).
* :func:`check_safetensors`: the 8-byte header length, the JSON header, every tensor's ``data_offsets``.
* :func:`check_model_files`: the check that fits a path (a ``.gguf`` file, a ``.safetensors`` file, or a folder
  holding safetensors shards); other sources (Hub ids, ``.bin`` checkpoints) pass unchecked.

Each returns the number of bytes the header accounts for; each raises :class:`CorruptModelFileError`.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from .errors import CorruptModelFileError

GGUF_MAGIC = b"GGUF"
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
DEFAULT_ALIGNMENT = 32
_FIX = ("Fix: re-fetch it (for a built-in model: delete it and run `acttail-lab fetch --model NAME`; "
        "otherwise download it again and compare its checksum with the publisher's).")


class _Reader:
    """Little-endian reads from a binary file that fail with a clear error at the end of the file."""

    def __init__(self, handle, path: Path, size: int):
        self.handle, self.path, self.size = handle, path, size

    def take(self, n: int) -> bytes:
        data = self.handle.read(n)
        if len(data) != n:
            raise CorruptModelFileError(f"{self.path} ends inside its header (at byte {self.size:,}): the file is "
                                        f"truncated. {_FIX}")
        return data

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        length = self.unpack("Q")
        if length > self.size:
            raise CorruptModelFileError(f"{self.path} has a header string of {length:,} bytes in a file of "
                                        f"{self.size:,}: the file is corrupt. {_FIX}")
        return self.take(length).decode("utf-8", errors="replace")

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.unpack("I"), self.unpack("Q")
            if item in _SCALARS:  # skip numeric arrays in one read
                self.take(count * struct.calcsize("<" + _SCALARS[item]))
                return None
            for _ in range(count):
                self.value(item)
            return None
        raise CorruptModelFileError(f"{self.path} has an unknown GGUF value type {kind}: the file is corrupt. {_FIX}")


def _tensor_bytes(shape: list[int], ggml_type: int, path: Path) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise CorruptModelFileError(f"{path} names tensor type {ggml_type}, which gguf does not know: the file is "
                                    f"corrupt or newer than the installed gguf package. {_FIX}") from None
    count = 1
    for dim in shape:
        count *= dim
    return count // block * type_size


def _enough(path: Path, needed: int, n_tensors: int, size: int) -> int:
    """``needed`` when the file has at least that many bytes, else a "truncated ... re-fetch" error."""
    if size < needed:
        raise CorruptModelFileError(
            f"{path} is truncated: its header describes {n_tensors} tensors ending at byte {needed:,}, but the file "
            f"has {size:,} bytes ({size / needed:.1%} of it). {_FIX}")
    return needed


def gguf_tensors(path: str | os.PathLike) -> tuple[list[tuple[str, list[int], int, int]], int]:
    """A GGUF file's tensor infos ``[(name, shape, ggml type, offset)]`` and where its data starts (bytes), read
    from the header alone; raises :class:`CorruptModelFileError` when the file is not GGUF v2/v3 or its header
    is cut."""
    path = Path(path)
    with open(path, "rb") as handle:
        reader = _Reader(handle, path, path.stat().st_size)
        if handle.read(4) != GGUF_MAGIC:
            raise CorruptModelFileError(f"{path} is not a GGUF file (it does not start with 'GGUF'). {_FIX}")
        version = reader.unpack("I")
        if version not in (2, 3):
            raise CorruptModelFileError(f"{path} is GGUF version {version}; versions 2 and 3 are supported. "
                                        "Fix: convert it with a current llama.cpp, or re-fetch it.")
        n_tensors, n_kv = reader.unpack("Q"), reader.unpack("Q")
        alignment = DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key = reader.string()
            value = reader.value(reader.unpack("I"))
            if key == "general.alignment" and isinstance(value, int) and value > 0:
                alignment = value
        tensors = []
        for _ in range(n_tensors):
            name = reader.string()
            shape = [reader.unpack("Q") for _ in range(reader.unpack("I"))]
            tensors.append((name, shape, reader.unpack("I"), reader.unpack("Q")))
        data_start = -(-handle.tell() // alignment) * alignment
    return tensors, data_start


def check_gguf(path: str | os.PathLike) -> int:
    """Bytes a GGUF file's header accounts for (data start + the end of its last tensor); raises
    :class:`CorruptModelFileError` when the file is not GGUF or is shorter than that."""
    path = Path(path)
    tensors, data_start = gguf_tensors(path)
    end = max((offset + _tensor_bytes(shape, ggml_type, path) for _, shape, ggml_type, offset in tensors), default=0)
    return _enough(path, data_start + end, len(tensors), path.stat().st_size)


def safetensors_header(path: str | os.PathLike) -> tuple[dict, int]:
    """A safetensors file's JSON header and its length in bytes; raises :class:`CorruptModelFileError` when the
    header is unreadable."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            raise CorruptModelFileError(f"{path} has {size} bytes, too few for a safetensors header. {_FIX}")
        length = struct.unpack("<Q", head)[0]
        if length > size - 8 or length > 100_000_000:
            raise CorruptModelFileError(f"{path} declares a header of {length:,} bytes in a file of {size:,}: it is "
                                        f"truncated or not a safetensors file. {_FIX}")
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            raise CorruptModelFileError(f"{path} has an unreadable safetensors header: it is corrupt. {_FIX}") from None
    return header, length


def check_safetensors(path: str | os.PathLike) -> int:
    """Bytes a safetensors file's header accounts for; raises :class:`CorruptModelFileError` when the header is
    unreadable or the file is shorter than its tensors' ``data_offsets``."""
    path = Path(path)
    header, length = safetensors_header(path)
    size = path.stat().st_size
    ends = [entry["data_offsets"][1] for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry]
    return _enough(path, 8 + length + max(ends, default=0), len(ends), size)


def check_model_files(source: str | os.PathLike) -> None:
    """Check the model files behind ``source`` (a ``.gguf`` or ``.safetensors`` file, or a folder of safetensors
    shards) before anything loads them; other sources (Hub ids, other formats) pass unchecked."""
    path = Path(os.path.expanduser(str(source)))
    if path.is_file() and path.suffix == ".gguf":
        check_gguf(path)
    elif path.is_file() and path.suffix == ".safetensors":
        check_safetensors(path)
    elif path.is_dir():
        for shard in sorted(path.glob("*.safetensors")):
            check_safetensors(shard)
