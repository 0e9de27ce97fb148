"""Datasets for the probes: byte/token language modelling, patchified vision and scikit-learn's 8x8 digits.

Every loader returns a :class:`Task` whose splits draw batches deterministically from a CPU
``torch.Generator``: LM ``(x, y)`` int64 ``[B, T]`` with ``y`` = ``x`` shifted by one token; vision
``x`` float32 ``[B, S, D_in]`` (standardised, patchified), ``y`` int64 ``[B]``.  Nothing is downloaded
or cached on disk.

Nothing read from a data file is run: CIFAR-10 python batches (pickles) go through a restricted unpickler that
rebuilds only dicts, lists, str, bytes, int and numpy arrays of numbers (`read_cifar_batch`); CIFAR-5M .npz files
are read with ``allow_pickle=False``; token .bin files are memory-mapped numbers."""

from __future__ import annotations

import hashlib
import os
import pickle
import platform
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DataError",
    "Split",
    "TokenSplit",
    "ImageSplit",
    "Task",
    "patchify",
    "stdlib_corpus",
    "synthetic_vision",
    "digits",
    "cifar10_pickle",
    "cifar5m_npz",
    "token_bin",
    "load_task",
    "TASKS",
    "DEFAULT_PATCH",
    "DIGITS_IMAGE",
    "DIGITS_HELDOUT",
    "default_patch",
    "read_cifar_batch",
]

TASKS = ("lm", "vision", "digits")
# patch side per image task when none is given: 16x16 synthetic (or 32x32 CIFAR) images -> 4, 8x8 digits -> 2 (16
# tokens of 4 features, so attention has tokens to mix); the LM has no patches (4 is kept as the recorded value)
DEFAULT_PATCH = {"lm": 4, "vision": 4, "digits": 2}
DIGITS_IMAGE, DIGITS_CLASSES, DIGITS_HELDOUT = 8, 10, 297


def default_patch(task: str) -> int:
    """The patch side (pixels) of `task` when the config gives none: 2 for digits, 4 otherwise."""
    return DEFAULT_PATCH.get(task, 4)


_STDLIB_EXCLUDE = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "__pycache__",
    "turtledemo",
    "encodings",
    "ensurepip",
}


class DataError(ValueError):
    """Bad data input (missing path, wrong layout/dtype/shape, too little data)."""


class Split:
    """A split that draws random batches deterministically from a generator."""

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Draw a random batch (with replacement) using only ``generator`` (a CPU generator)."""
        raise NotImplementedError

    def fixed(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """Return ``batch(n)`` from a fresh generator seeded with ``seed`` (a reproducible probe batch)."""
        return self.batch(n, torch.Generator().manual_seed(int(seed)))


class TokenSplit(Split):
    """Contiguous windows of a 1-D token stream (``np.ndarray`` or ``np.memmap``, any int dtype)."""

    def __init__(self, tokens: np.ndarray, seq_len: int, name: str = "tokens") -> None:
        if seq_len < 1 or tokens.ndim != 1 or len(tokens) < seq_len + 1:
            raise DataError(f"{name}: has {len(tokens)} tokens, need seq_len+1={seq_len + 1} (seq_len >= 1)")
        self.tokens, self.seq_len, self.name = tokens, seq_len, name

    def __len__(self) -> int:
        """Number of tokens in the stream."""
        return len(self.tokens)

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Return ``(x, y)``, both int64 ``[batch_size, seq_len]``, with ``y`` = ``x`` shifted by one."""
        if batch_size < 1:
            raise DataError(f"batch_size={batch_size}: must be >= 1")
        starts = torch.randint(0, len(self.tokens) - self.seq_len, (batch_size,), generator=generator)
        idx = starts.numpy()[:, None] + np.arange(self.seq_len + 1)
        chunk = torch.from_numpy(np.asarray(self.tokens[idx]).astype(np.int64))
        return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()


class ImageSplit(Split):
    """Raw images (e.g. uint8 ``[N, C, H, W]``, or ``[N, H, W, C]`` with layout "hwc"), int ``labels [N]``,
    standardised per batch as ``(x - offset[i]) / scale[i]`` (float32 ``[N]``) and patchified;
    ``index`` (optional int64) selects this split's rows so splits can share one array."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        offset: np.ndarray,
        scale: np.ndarray,
        patch: int,
        layout: str = "chw",
        index: np.ndarray | None = None,
    ) -> None:
        self.images, self.labels, self.offset, self.scale = images, labels, offset, scale
        self.patch, self.layout, self.index = patch, layout, index

    @classmethod
    def standardised(cls, x: np.ndarray, y: np.ndarray, mean: float, std: float, patch: int) -> ImageSplit:
        """``[N, C, H, W]`` images standardised by one global ``mean``/``std``."""
        return cls(x, y, np.full(len(x), mean, np.float32), np.full(len(x), std, np.float32), patch)

    def __len__(self) -> int:
        """Number of images in the split."""
        return len(self.images) if self.index is None else len(self.index)

    def _get(self, idx: np.ndarray) -> tuple[Tensor, Tensor]:
        rows = idx if self.index is None else self.index[idx]
        x = torch.from_numpy(np.asarray(self.images[rows])).to(torch.float32)
        if self.layout == "hwc":
            x = x.permute(0, 3, 1, 2)
        off, scl = (torch.from_numpy(a[rows]).view(-1, 1, 1, 1) for a in (self.offset, self.scale))
        y = torch.from_numpy(np.asarray(self.labels[rows]).astype(np.int64))
        return patchify((x - off) / scl, self.patch), y

    def at(self, pos: np.ndarray) -> tuple[Tensor, Tensor]:
        """Return the samples at positions ``pos`` (int ``[n]``, in ``[0, len(self))``) of this split: ``(x float32
        [n, S, D_in], y int64 [n])``, exactly as `batch` and `fixed` build them."""
        return self._get(np.asarray(pos))

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Return ``(x float32 [B, S, D_in], y int64 [B])`` sampled with replacement."""
        if batch_size < 1:
            raise DataError(f"batch_size={batch_size}: must be >= 1")
        return self._get(torch.randint(0, len(self), (batch_size,), generator=generator).numpy())

    def fixed(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """Return ``n`` distinct samples (``x float32 [n, S, D_in]``, ``y int64 [n]``) chosen by ``seed``."""
        return self._get(self._fixed_rows(n, seed))

    def _fixed_rows(self, n: int, seed: int) -> np.ndarray:
        """The positions in this split of the ``n`` distinct samples `fixed` returns (DataError when n is too big)."""
        if not 1 <= n <= len(self):
            raise DataError(f"fixed(n={n}): split has only {len(self)} images")
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(int(seed)))
        return perm[:n].numpy()

    def subset(self, n: int, seed: int) -> ImageSplit:
        """The split of exactly the ``n`` samples ``fixed(n, seed)`` returns, in that order (shares the arrays):
        a fixed training subset that random batches can be drawn from."""
        pos = self._fixed_rows(n, seed)
        rows = pos if self.index is None else self.index[pos]
        return ImageSplit(
            self.images, self.labels, self.offset, self.scale, self.patch, self.layout, np.asarray(rows, dtype=np.int64)
        )


@dataclass
class Task:
    """A train/heldout pair plus the shape metadata a model needs.

    ``seq_len`` is tokens per LM sample or patches per image; ``d_in`` is the patch dimension
    (0 for LM); ``vocab_size`` is set for LM and ``n_classes`` for vision, the other is None.
    """

    kind: str
    train: Split
    heldout: Split
    vocab_size: int | None
    n_classes: int | None
    seq_len: int
    d_in: int
    description: str


def patchify(images: Tensor, patch: int) -> Tensor:
    """Cut ``[B, C, H, W]`` images into non-overlapping patches.

    Returns a tensor ``[B, S, C*patch*patch]`` (same dtype) with ``S = (H/patch)*(W/patch)``, patches in
    row-major order and features ordered (channel, row-in-patch, col-in-patch).
    """
    if images.ndim != 4:
        raise DataError(f"patchify: expected [B, C, H, W], got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    if patch < 1 or h % patch or w % patch:
        raise DataError(f"patch={patch}: must divide image height {h} and width {w}")
    x = images.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // patch) * (w // patch), c * patch * patch)


def _moments(arr: np.ndarray, name: str, chunk: int = 8192) -> tuple[float, float]:
    """Global mean/std over all elements of ``arr`` (chunked over axis 0, float64 accumulation)."""
    s, ss, count = 0.0, 0.0, 0
    for i in range(0, len(arr), chunk):
        c = np.asarray(arr[i : i + chunk], dtype=np.float64)
        s, ss, count = s + float(c.sum()), ss + float(np.square(c).sum()), count + c.size
    mean = s / max(count, 1)
    std = max(ss / max(count, 1) - mean * mean, 0.0) ** 0.5
    if count == 0 or std < 1e-8:
        raise DataError(f"{name}: images are empty or constant (std={std:.3g}); cannot standardise")
    return mean, std


def stdlib_corpus(seq_len: int = 64, max_bytes: int = 2_000_000) -> Task:
    """Byte-level LM corpus (vocab 256) from this interpreter's stdlib ``*.py`` sources.

    Files under ``sysconfig.get_paths()["stdlib"]`` (pruning site-packages, tests, idlelib, lib2to3,
    encodings, ...) are picked in md5-of-relative-path order while the total stays <= ``max_bytes``,
    then sorted by path; a file goes to heldout whenever heldout has <= 10% of the bytes so far (split
    BY FILE).  Splits are uint8 byte streams (``.files`` lists relative paths).  Content depends on
    the Python version; ``description`` records it with the file and byte counts.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise DataError(f"{root}: stdlib source directory not found")
    files = []
    for d, dirs, names in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in _STDLIB_EXCLUDE)
        files += [(Path(d, f).relative_to(root).as_posix(), Path(d, f)) for f in names if f.endswith(".py")]
    picked, total = [], 0
    for rel, p in sorted(files, key=lambda f: hashlib.md5(f[0].encode()).hexdigest()):
        size = p.stat().st_size
        if 0 < size and total + size <= max_bytes:
            picked.append((rel, p, p.read_bytes()))
            total += size
    train, held, seen, held_bytes = [], [], 0, 0
    for f in sorted(picked):
        seen += len(f[2])
        if held_bytes <= 0.1 * (seen - len(f[2])) and len(picked) > 1:
            held.append(f)
            held_bytes += len(f[2])
        else:
            train.append(f)
    if not train or not held:
        raise DataError(f"max_bytes={max_bytes}: selects {len(picked)} files from {root}, need >= 2")

    def cat(fs: list[tuple[str, Path, bytes]], name: str) -> TokenSplit:
        buf = np.frombuffer(b"".join(f[2] for f in fs), dtype=np.uint8)
        split = TokenSplit(buf, seq_len, name=f"{root} ({name}, max_bytes={max_bytes})")
        split.files = [f[0] for f in fs]  # type: ignore[attr-defined]
        return split

    tr, he = cat(train, "train"), cat(held, "heldout")
    desc = (
        f"stdlib bytes: Python {platform.python_version()} {root}; train {len(train)} files "
        f"{len(tr)} bytes, heldout {len(held)} files {len(he)} bytes; vocab 256"
    )
    return Task("lm", tr, he, 256, None, seq_len, 0, desc)


def synthetic_vision(
    n_classes: int = 10,
    image_size: int = 16,
    channels: int = 3,
    patch: int = 4,
    n_train: int = 4096,
    n_heldout: int = 1024,
    seed: int = 0,
) -> Task:
    """Seeded images: smooth random template per class, cyclic shift (<=4 px), noise (3x template std).

    Nearest-class-mean gets ~85% heldout at the defaults, a linear probe ~75%.  Images are standardised
    by the train set's global mean/std and patchified on access: ``x float32 [B, (image_size/patch)^2,
    channels*patch^2]``; labels int64 are balanced (every class appears when ``n >= n_classes``).
    """
    if n_classes < 2 or channels < 1 or n_train < n_classes or n_heldout < 1:
        raise DataError(
            f"synthetic_vision: need n_classes>=2, channels>=1, n_train>=n_classes, "
            f"n_heldout>=1 (got {n_classes}, {channels}, {n_train}, {n_heldout})"
        )
    s = patchify(torch.empty(0, channels, image_size, image_size), patch).shape[1]
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.standard_normal((n_classes, channels, 4, 4)))
    templates = torch.nn.functional.interpolate(
        coarse, size=(image_size, image_size), mode="bicubic", align_corners=False
    ).numpy()
    templates /= templates.std()

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.arange(n) % n_classes).astype(np.int64)
        imgs = templates[labels] + 3.0 * rng.standard_normal((n, channels, image_size, image_size))
        shifts = rng.integers(-4, 5, size=(n, 2))
        for i, (dy, dx) in enumerate(shifts):
            imgs[i] = np.roll(imgs[i], (int(dy), int(dx)), axis=(1, 2))
        return imgs.astype(np.float32), labels

    (xtr, ytr), (xhe, yhe) = make(n_train), make(n_heldout)
    mean, std = _moments(xtr, "synthetic_vision")
    tr, he = (ImageSplit.standardised(x, y, mean, std, patch) for x, y in ((xtr, ytr), (xhe, yhe)))
    desc = (
        f"synthetic vision: {n_classes} classes, {channels}x{image_size}x{image_size}, patch {patch}, "
        f"train {n_train}, heldout {n_heldout}, seed {seed}"
    )
    return Task("vision", tr, he, None, n_classes, s, channels * patch * patch, desc)


def digits(patch: int = 2) -> Task:
    """scikit-learn's bundled handwritten digits (`sklearn.datasets.load_digits`, shipped in the wheel, nothing is
    downloaded): 1797 grey 8x8 images with values 0..16, 10 classes.

    Split (fixed, independent of every seed): a permutation of the 1797 images by `numpy.random.default_rng(0)`;
    its last DIGITS_HELDOUT = 297 images are the held-out split, the first 1500 the training split. Both are
    standardised by the training split's global pixel mean and std (over all its pixels). Batches: ``x float32
    [B, (8/patch)^2, patch^2]`` (patch 2: 16 tokens of 4 features), ``y int64 [B]`` in [0, 10).
    """
    from sklearn.datasets import load_digits

    s = patchify(torch.empty(0, 1, DIGITS_IMAGE, DIGITS_IMAGE), patch).shape[1]
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)[:, None]  # (1797, 1, 8, 8), values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    perm = np.random.default_rng(0).permutation(len(images))
    tr_ix, he_ix = perm[:-DIGITS_HELDOUT], perm[-DIGITS_HELDOUT:]
    xtr, ytr, xhe, yhe = images[tr_ix], labels[tr_ix], images[he_ix], labels[he_ix]
    mean, std = _moments(xtr, "digits")
    tr, he = (ImageSplit.standardised(x, y, mean, std, patch) for x, y in ((xtr, ytr), (xhe, yhe)))
    desc = (
        f"digits (scikit-learn load_digits): {DIGITS_CLASSES} classes, 1x{DIGITS_IMAGE}x{DIGITS_IMAGE}, patch "
        f"{patch}, train {len(xtr)}, heldout {len(xhe)} (fixed seed-0 permutation), mean {mean:.3f} std {std:.3f}"
    )
    return Task("digits", tr, he, None, DIGITS_CLASSES, s, patch * patch, desc)


# ----------------------------------------------------------------------------------------------- CIFAR-10 pickles
# A CIFAR-10 python batch is a pickle, and a pickle can call any function it names (os.system, eval, ...) while
# it loads. `_CifarUnpickler` admits only the globals that rebuild numpy arrays of numbers (each through a wrapper
# that checks its arguments; nothing else callable), and `_plain` then checks what was built.
PLAIN = "only numpy arrays of numbers, dicts, lists, str, bytes and int are loaded"
NUMERIC_KINDS = "biufc"  # bool, signed and unsigned int, float, complex


class _Refused(Exception):
    """What a CIFAR-10 batch holds that is not plain data (the message names it)."""


class _NdarrayClass:
    """Stands for ``numpy.ndarray`` in a pickle: only `_reconstruct` accepts it (ndarray itself is never called)."""


_NDARRAY = _NdarrayClass()


def _numeric(dtype: object) -> np.dtype:
    """``dtype`` as a numpy dtype of numbers (bool, int, float, complex); _Refused otherwise."""
    try:
        dt = np.dtype(dtype) if isinstance(dtype, (str, bytes, np.dtype)) else None
    except TypeError:
        dt = None
    if dt is None or dt.kind not in NUMERIC_KINDS or dt.hasobject:
        raise _Refused(f"an array of dtype {dt if dt is not None else type(dtype).__name__}")
    return dt


def _shape(shape: object) -> tuple[int, ...]:
    """``shape`` if it is a tuple of non-negative ints; _Refused otherwise."""
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise _Refused(f"an array shape {type(shape).__name__}")
    return shape


def _reconstruct(subtype: object, shape: object, dtype: object) -> np.ndarray:
    """numpy's ``_reconstruct``: an empty ndarray whose state the pickle then sets (BUILD)."""
    if subtype is not _NDARRAY:
        raise _Refused(f"an array of class {type(subtype).__name__}")
    return np.ndarray(_shape(shape), np.dtype(dtype) if isinstance(dtype, (str, bytes)) else _numeric(dtype))


def _frombuffer(buf: object, dtype: object, shape: object, order: object) -> np.ndarray:
    """numpy's ``_frombuffer`` (pickle protocol 5): the array of numbers in ``buf``."""
    if not isinstance(buf, (bytes, bytearray)) or order not in ("C", "F"):
        raise _Refused(f"an array buffer {type(buf).__name__}")
    return np.frombuffer(buf, dtype=_numeric(dtype)).reshape(_shape(shape), order=order)


def _dtype(spec: object, align: object = False, copy: object = False) -> np.dtype:
    """``numpy.dtype`` from a type string (its state, set next by the pickle, is checked in `_plain`)."""
    if not isinstance(spec, (str, bytes)) or type(align) not in (bool, int) or type(copy) not in (bool, int):
        raise _Refused(f"a dtype from {type(spec).__name__}")  # Python 2 pickled the flags as 0 and 1
    return np.dtype(spec, bool(align), bool(copy))


def _latin1(text: object, encoding: object = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol 2 uses it for bytes: a str encoded as latin-1."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode of a {type(text).__name__} as {encoding!r}")
    return text.encode("latin-1")


_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1,
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names in `_CIFAR_GLOBALS` (numpy arrays of numbers)."""

    def find_class(self, module: str, name: str) -> object:
        """The checked stand-in for ``module.name``; _Refused for anything else."""
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"pickle global {module}.{name}") from None


def _plain(obj: object) -> None:
    """_Refused unless ``obj`` is a dict whose keys are str/bytes and whose values are, all the way down, dicts,
    lists, str, bytes, int and numpy arrays of numbers. Each container is visited once (shared references in a
    pickle cannot make the walk exponential)."""
    if type(obj) is not dict:
        raise _Refused(f"a top-level {type(obj).__name__} (a batch is a dict)")
    stack, seen = [obj], set()
    while stack:
        x = stack.pop()
        if type(x) in (dict, list):
            if id(x) in seen:
                continue
            seen.add(id(x))
            if type(x) is dict:
                bad = [k for k in x if type(k) not in (str, bytes)]
                if bad:
                    raise _Refused(f"a dict key of type {type(bad[0]).__name__}")
                stack.extend(x.values())
            else:
                stack.extend(x)
        elif type(x) is np.ndarray:
            _numeric(x.dtype)
        elif type(x) not in (str, bytes, int, bool):
            raise _Refused(f"a {type(x).__name__}")


def read_cifar_batch(path: str | os.PathLike) -> dict:
    """The dict of one CIFAR-10 python batch, read through the restricted unpickler (nothing it names is run
    unless it rebuilds numpy arrays of numbers); keys decoded from latin-1 bytes to str. DataError naming the
    file for anything else."""
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
        _plain(d)
    except _Refused as e:
        raise DataError(f"{path}: not a CIFAR-10 python batch (refused {e}: {PLAIN})") from None
    except Exception as e:  # on purpose: any unreadable file is a data error
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def _unpickle_cifar(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = read_cifar_batch(path)
    try:
        data, labels = np.asarray(d["data"]), np.asarray(d["labels"])
    except Exception as e:  # on purpose: a missing key or ragged labels: a data error
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: b'data' must be uint8 [n, 3072], got {data.dtype} {data.shape}")
    if (
        labels.dtype.kind not in "iu"
        or labels.shape != (len(data),)
        or labels.min(initial=0) < 0
        or labels.max(initial=0) > 9
    ):
        raise DataError(f"{path}: b'labels' must be {len(data)} ints in [0, 9], got {labels.dtype} {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def cifar10_pickle(path: str | Path, patch: int = 4) -> Task:
    """CIFAR-10 from the official python-format folder (``data_batch_*`` + ``test_batch``).

    Any non-empty subset of ``data_batch_*`` is the train set; ``test_batch`` is heldout.  Both are
    standardised by the train set's global mean/std.  Batches: ``x float32 [B, (32/patch)^2,
    3*patch^2]``, ``y int64 [B]`` in [0, 10).
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: CIFAR-10 folder does not exist")
    batches = sorted(p for p in root.glob("data_batch_*") if re.fullmatch(r"data_batch_\d+", p.name))
    if not batches:
        raise DataError(f"{root}: no data_batch_* files (CIFAR-10 python format)")
    if not (root / "test_batch").is_file():
        raise DataError(f"{root}: missing test_batch (needed for heldout)")
    s = patchify(torch.empty(0, 3, 32, 32), patch).shape[1]
    parts = [_unpickle_cifar(p) for p in batches]
    xtr, ytr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    xte, yte = _unpickle_cifar(root / "test_batch")
    mean, std = _moments(xtr, str(root))
    tr, he = (ImageSplit.standardised(x, y, mean, std, patch) for x, y in ((xtr, ytr), (xte, yte)))
    desc = (
        f"CIFAR-10 {root}: train {len(xtr)} ({', '.join(p.name for p in batches)}), heldout "
        f"{len(xte)}, patch {patch}, mean {mean:.2f} std {std:.2f}"
    )
    return Task("vision", tr, he, None, 10, s, 3 * patch * patch, desc)


def _npz(path: Path, key: str) -> np.ndarray:
    """Array ``key`` of the .npz file ``path``, read without pickle (an object array is refused, never unpickled);
    DataError naming the file otherwise."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return np.asarray(z[key])
    except ValueError as e:
        if "allow_pickle" in str(e):  # numpy refuses an object array (or a pickle file) without unpickling
            raise DataError(
                f"{path}: array {key!r} holds pickled Python objects; refused (only arrays of numbers "
                f"are read, never with pickle)"
            ) from None
        raise DataError(f"{path}: cannot read array {key!r} (ValueError: {e})") from None
    except Exception as e:  # on purpose: any unreadable file is a data error
        raise DataError(f"{path}: cannot read array {key!r} ({type(e).__name__}: {e})") from None


def cifar5m_npz(path: str | Path, patch: int = 4, heldout_fraction: float = 0.1) -> Task:
    """CIFAR-5M: one ``.npz`` or a folder of ``cifar5m_part*.npz`` with ``X`` uint8 [n, H, W, 3], ``Y`` [n].

    Each part is standardised by its own global mean/std.  A fixed (seed-0) permutation of all images
    puts ``round(heldout_fraction * N)`` in heldout.  Batches: ``x float32 [B, HW/patch^2, 3*patch^2]``,
    ``y int64 [B]`` in [0, 10).  Images stay uint8 in memory.
    """
    root = Path(path)
    files = [root] if root.is_file() and root.suffix == ".npz" else []
    if root.is_dir():
        files = sorted(root.glob("cifar5m_part*.npz")) or sorted(root.glob("*.npz"))
    if not files:
        raise DataError(f"{root}: not an existing .npz file or folder of cifar5m_part*.npz")
    if not 0.0 < heldout_fraction < 1.0:
        raise DataError(f"heldout_fraction={heldout_fraction}: must be in (0, 1)")
    ys = [_npz(f, "Y") for f in files]
    n = sum(len(y) for y in ys)
    images: np.ndarray | None = None
    offset, scale = np.empty(n, np.float32), np.empty(n, np.float32)
    start = 0
    for f, y in zip(files, ys):
        x = _npz(f, "X")
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3 or len(x) != len(y) or y.ndim != 1:
            raise DataError(f"{f}: need X uint8 [n, H, W, 3], Y [n]; got X {x.dtype} {x.shape}, Y {y.shape}")
        if images is None:
            images = np.empty((n, *x.shape[1:]), np.uint8)
        elif x.shape[1:] != images.shape[1:]:
            raise DataError(f"{f}: image shape {x.shape[1:]} differs from earlier parts {images.shape[1:]}")
        images[start : start + len(x)] = x
        offset[start : start + len(x)], scale[start : start + len(x)] = _moments(x, str(f))
        start += len(x)
    assert images is not None
    labels = np.concatenate(ys).astype(np.int64)
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{root}: labels must be in [0, 9], got [{labels.min()}, {labels.max()}]")
    s = patchify(torch.empty(0, 3, *images.shape[1:3]), patch).shape[1]
    n_held = int(round(heldout_fraction * n))
    if n_held < 1 or n_held >= n:
        raise DataError(f"{root}: {n} images too few for heldout_fraction={heldout_fraction}")
    perm = np.random.default_rng(0).permutation(n)
    tr, he = (
        ImageSplit(images, labels, offset, scale, patch, "hwc", np.sort(ix)) for ix in (perm[n_held:], perm[:n_held])
    )
    desc = f"CIFAR-5M {root}: {len(files)} part(s), train {n - n_held}, heldout {n_held}, patch {patch}"
    return Task("vision", tr, he, None, 10, s, 3 * patch * patch, desc)


def _memmap(path: Path, dtype: np.dtype) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: token file does not exist")
    size = path.stat().st_size
    if size == 0 or size % dtype.itemsize:
        raise DataError(f"{path}: size {size} bytes is not a positive multiple of {dtype} itemsize")
    return np.memmap(path, dtype=dtype, mode="r")


def token_bin(path: str | Path, seq_len: int = 64, vocab_size: int | None = None, dtype: str = "uint16") -> Task:
    """nanoGPT token files: a folder with ``train.bin``/``val.bin`` or one ``.bin`` split 90/10.

    Files are memory-mapped (never read into memory).  ``vocab_size`` defaults to max token + 1,
    found by scanning both splits (seconds for GB files); a given ``vocab_size`` is checked against it.
    Batches: ``x``, ``y`` int64 ``[B, seq_len]``.
    """
    root = Path(path)
    if str(dtype) not in ("uint8", "uint16", "uint32", "int32", "int64"):
        raise DataError(f"dtype={dtype!r}: must be one of uint8, uint16, uint32, int32, int64")
    dt = np.dtype(str(dtype))
    if root.is_dir():
        tr_path, he_path = root / "train.bin", root / "val.bin"
        tr, he = _memmap(tr_path, dt), _memmap(he_path, dt)
    elif root.is_file():
        tr_path = he_path = root
        mm = _memmap(root, dt)
        cut = int(len(mm) * 0.9)
        tr, he = mm[:cut], mm[cut:]
    else:
        raise DataError(f"{root}: token path does not exist (want folder with train.bin/val.bin or a .bin)")
    tr_split = TokenSplit(tr, seq_len, name=f"{tr_path} (train)")
    he_split = TokenSplit(he, seq_len, name=f"{he_path} (heldout)")
    lo, hi = min(int(tr.min()), int(he.min())), max(int(tr.max()), int(he.max()))
    if lo < 0:
        raise DataError(f"{root}: negative token id {lo}")
    if vocab_size is not None and hi >= vocab_size:
        raise DataError(f"vocab_size={vocab_size}: {root} contains token id {hi}")
    vocab = hi + 1 if vocab_size is None else int(vocab_size)
    desc = f"tokens {root} ({dt}): train {len(tr)}, heldout {len(he)}, vocab {vocab}"
    return Task("lm", tr_split, he_split, vocab, None, seq_len, 0, desc)


# The task last loaded from a data path with `remember` (the command line's check of --data before any work), so
# the run in the same process reuses it instead of reading the files again: {key: Task}, at most one entry.
_REMEMBERED: dict[tuple, Task] = {}


def _stat_key(path: str | os.PathLike) -> tuple:
    """(device, inode, size, mtime, ctime) of ``path``: changes when the file is replaced or written."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _files_key(path: Path) -> tuple:
    """What identifies the contents `load_task` reads at ``path``: the stat (device, inode, size, mtime, ctime) of
    the file, or of the folder and every file directly in it (the loaders read no deeper)."""
    if not path.is_dir():
        return (str(path.resolve()), _stat_key(path))
    with os.scandir(path) as it:
        files = sorted((e.name, _stat_key(e.path)) for e in it if e.is_file())
    return (str(path.resolve()), _stat_key(path), tuple(files))


def load_task(
    task: str,
    data_path: str | None = None,
    seq_len: int = 64,
    patch: int | None = None,
    seed: int = 0,
    remember: bool = False,
) -> Task:
    """Dispatch: lm -> stdlib corpus / :func:`token_bin`; vision -> synthetic / CIFAR-10 / CIFAR-5M; digits ->
    :func:`digits` (no ``data_path``). ``patch`` None: the task's default (`default_patch`).

    ``seed`` only affects the synthetic vision task (real-data splits are fixed).  Returns a :class:`Task`.
    A task read from ``data_path`` with ``remember`` is kept (one at a time); a later call with the same arguments
    on unchanged files (same size, mtime, ctime, inode) returns that same object instead of reading them again."""
    if task not in TASKS:
        raise DataError(f"task={task!r}: unknown, expected one of {', '.join(TASKS)}")
    patch = default_patch(task) if patch is None else patch
    if data_path is None or task == "digits":
        return _load_task(task, data_path, seq_len, patch, seed)
    try:
        key = (task, seq_len, patch, seed, _files_key(Path(data_path)))
    except OSError:
        key = None  # the loader says what is wrong with the path
    if key is not None and key in _REMEMBERED:
        return _REMEMBERED[key]
    loaded = _load_task(task, data_path, seq_len, patch, seed)
    if remember and key is not None:
        _REMEMBERED.clear()
        _REMEMBERED[key] = loaded
    return loaded


def _load_task(task: str, data_path: str | None, seq_len: int, patch: int, seed: int) -> Task:
    """`load_task` without the remembered task."""
    if task == "digits":
        if data_path is not None:
            raise DataError(f"data_path={data_path}: the digits task is bundled with scikit-learn and takes no path")
        return digits(patch=patch)
    if data_path is None:
        return stdlib_corpus(seq_len=seq_len) if task == "lm" else synthetic_vision(patch=patch, seed=seed)
    p = Path(data_path)
    if not p.exists():
        raise DataError(f"data_path={data_path}: does not exist")
    if task == "lm":
        return token_bin(p, seq_len=seq_len)
    if p.is_dir() and (any(p.glob("data_batch_*")) or (p / "test_batch").exists()):
        return cifar10_pickle(p, patch=patch)
    if (p.is_file() and p.suffix == ".npz") or (p.is_dir() and any(p.glob("*.npz"))):
        return cifar5m_npz(p, patch=patch)
    raise DataError(f"data_path={data_path}: not a CIFAR-10 folder (data_batch_*) or CIFAR-5M .npz")
