"""What a .zarr store may ask its reader to do, checked from its JSON metadata before zarr or xarray opens it.

A zarr array names the codecs that decode its chunks. Some of them rebuild Python objects: numcodecs' ``pickle``
(which runs whatever the pickle names, e.g. ``os.system``), ``msgpack2``, ``json2``, ``vlen-*`` and any codec a
plug-in registers. `check_zarr_store` reads every array's metadata -- zarr v2 ``.zarray`` files and the
consolidated ``.zmetadata``, zarr v3 ``zarr.json`` (inline consolidated metadata included) -- and refuses any
codec, filter or compressor outside an allow-list, and any data type that is not fixed-width numbers, bool,
fixed-size bytes/unicode or UTF-8 strings. The allow-list holds what `probes.experiment.dataset.save` writes (blosc, no
filters, numbers, bool, fixed-width unicode, and vlen-utf8 for a variable of object strings, which decodes to str
and nothing else) and the common lossless compressors, which turn bytes into bytes.

Nothing here imports zarr: the files are read as JSON (which builds only dicts, lists, str, numbers)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["UnsafeStore", "check_zarr_store", "SAFE_COMPRESSORS"]

SAFE_COMPRESSORS = ("blosc", "zstd", "lz4", "zlib", "gzip", "bz2", "lzma")
V2_DTYPE_KINDS = "biufcSU"  # bool, ints, floats, complex, fixed-size bytes and unicode
V3_CODECS = {
    "bytes",
    "transpose",
    "crc32c",
    "blosc",
    "zstd",
    "gzip",
    "sharding_indexed",
    *(f"numcodecs.{c}" for c in SAFE_COMPRESSORS),
}
V3_DATA_TYPES = {
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
    "fixed_length_utf32",
    "null_terminated_bytes",
}
OBJECT_STRINGS = "vlen-utf8"  # the one object codec: UTF-8 text -> str, for dtype "|O" / "string"
METADATA_FILES = (".zarray", ".zmetadata", "zarr.json")
MAX_METADATA_BYTES = 64 << 20
ALLOWED = (
    f"a .zarr store is read only with the compressors {', '.join(SAFE_COMPRESSORS)} and arrays of numbers, "
    f"bool or strings"
)


class UnsafeStore(ValueError):
    """A .zarr store whose metadata asks for a codec or data type outside the allow-list (the message says which
    and where)."""


def _codec_name(codec: object, key: str) -> str | None:
    """The name a codec entry gives under ``key`` ("id" in v2, "name" in v3), or None."""
    return codec if isinstance(codec, str) else codec.get(key) if isinstance(codec, dict) else None


def _v2_array(meta: object, where: str) -> None:
    """UnsafeStore unless the v2 array metadata `meta` has an allowed dtype, compressor and filters. Object
    strings (dtype "|O" with the one filter vlen-utf8, what `save` writes for an object-string variable) decode
    to str only and are allowed; any other object dtype is refused."""
    if not isinstance(meta, dict):
        raise UnsafeStore(f"{where}: array metadata is not a JSON object")
    filters = meta.get("filters") or []
    if not isinstance(filters, list):
        raise UnsafeStore(f"{where}: filters is not a list")
    dtype = meta.get("dtype")
    strings = dtype == "|O" and [_codec_name(f, "id") for f in filters] == [OBJECT_STRINGS]
    codecs = [("compressor", meta.get("compressor"))] if meta.get("compressor") is not None else []
    codecs += [("filter", f) for f in filters if not strings]
    for what, codec in codecs:
        name = _codec_name(codec, "id")
        if name not in SAFE_COMPRESSORS:
            raise UnsafeStore(f"{where}: refused {what} {json.dumps(name if name else codec)[:60]}")
    try:
        kind = np.dtype(dtype).kind if isinstance(dtype, str) and not strings else None
    except TypeError:
        kind = None
    if not strings and (kind is None or kind not in V2_DTYPE_KINDS):
        raise UnsafeStore(f"{where}: refused data type {json.dumps(dtype)[:60]}")


def _v3_codecs(codecs: object, where: str, strings: bool) -> None:
    """UnsafeStore unless every codec (those inside a shard included) is allowed; vlen-utf8 only for `strings`."""
    if not isinstance(codecs, list):
        raise UnsafeStore(f"{where}: codecs is not a list")
    for codec in codecs:
        name = _codec_name(codec, "name")
        if name not in V3_CODECS and not (strings and name == OBJECT_STRINGS):
            raise UnsafeStore(f"{where}: refused codec {json.dumps(name if name else codec)[:60]}")
        config = codec.get("configuration") if isinstance(codec, dict) else None
        if name == "sharding_indexed" and isinstance(config, dict):
            _v3_codecs(config.get("codecs", []), where, strings)
            _v3_codecs(config.get("index_codecs", []), where, False)


def _v3_node(meta: object, where: str) -> None:
    """UnsafeStore unless the v3 node `meta` (an array, or a group with inline consolidated metadata) uses
    only allowed data types and codecs."""
    if not isinstance(meta, dict):
        raise UnsafeStore(f"{where}: metadata is not a JSON object")
    if meta.get("node_type") == "array":
        dtype = meta.get("data_type")
        name = dtype.get("name") if isinstance(dtype, dict) else dtype
        _v3_codecs(meta.get("codecs"), where, strings=name == "string")
        if not isinstance(name, str) or name not in V3_DATA_TYPES | {"string"}:
            raise UnsafeStore(f"{where}: refused data type {json.dumps(dtype)[:60]}")
    consolidated = meta.get("consolidated_metadata")
    if isinstance(consolidated, dict) and isinstance(consolidated.get("metadata"), dict):
        for key, node in consolidated["metadata"].items():
            _v3_node(node, f"{where} ({key})")


def _read_json(path: Path) -> object:
    """The JSON value in the metadata file ``path``; UnsafeStore when it is too large or not JSON."""
    if path.stat().st_size > MAX_METADATA_BYTES:
        raise UnsafeStore(f"{path.name}: metadata file larger than {MAX_METADATA_BYTES >> 20} MiB")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        raise UnsafeStore(f"{path}: metadata is not JSON") from None


def check_zarr_store(root: str | os.PathLike) -> None:
    """UnsafeStore (a ValueError; one line naming the array and the codec or data type) unless every array that
    the .zarr folder `root` describes, at any depth, decodes with allowed codecs into allowed data types. Reads
    only the metadata JSON files, never a chunk; symbolic links to folders are not followed."""
    root = Path(root)
    for folder, _, files in os.walk(root):
        for name in METADATA_FILES:
            if name not in files:
                continue
            path = Path(folder, name)
            where = path.relative_to(root).as_posix()
            meta = _read_json(path)
            if name == ".zarray":
                _v2_array(meta, where)
            elif name == ".zmetadata":
                entries = meta.get("metadata") if isinstance(meta, dict) else None
                if not isinstance(entries, dict):
                    raise UnsafeStore(f"{where}: no 'metadata' object")
                for key, array in entries.items():
                    if key.endswith(".zarray"):
                        _v2_array(array, f"{where} ({key})")
            else:
                _v3_node(meta, where)
