"""The README's code blocks run as written, in order, from a fresh folder, and the files they name exist afterwards.

Every ```bash and ```python block of README.md is taken in order and run in one temporary folder (later blocks read
what earlier ones wrote, as a reader's would). Two lists below say where the test departs from the README, and the
test fails when either names a command the README no longer has:

- SYNTAX_ONLY: blocks that install packages or start a server; `bash -n` checks them, and the paths they name
  (`notebooks/`) must exist in the repository.
- SHORT: commands that take minutes on 2 cores, each with the faster variant the test runs instead. A variant
  changes only sizes, seeds and steps, never an output path, so the files the later blocks read are the same.

`dmft-probe` resolves to this checkout's CLI (a shim on PATH), so the test needs no install.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Paths a block names: under runs/ and figures/ the block must have made them; notebooks/ must be in the repository.
MADE = re.compile(r"(?<![\w/.])((?:runs|figures)/[\w./-]*[\w/])")
SHIPPED = re.compile(r"(?<![\w/.])(notebooks/[\w./-]*)")
LINK = re.compile(r"\]\(((?!https?://|#)[^)#\s]+)(?:#[^)]*)?\)")

# Blocks that install packages or start a server: `bash -n` only (their first command identifies them).
SYNTAX_ONLY = (
    (
        "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e . && .venv/bin/dmft-probe run --scale 4 "
        "--out runs/quick.nc"
    ),
    'python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e ".[dev,ray]" && .venv/bin/python -m pytest',
    'python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e ".[dev,lab]" && .venv/bin/jupyter lab notebooks/',
    ".venv/bin/jupyter lab --allow-root notebooks/",
)

# README command -> the faster variant run here (the README gives each one's measured time on 2 cores).
SHORT = {
    # 36 s on 2 loaded cores (200 steps) -> 20 steps
    "dmft-probe run --scale 4 --out runs/quick.nc": "dmft-probe run --scale 4 --steps 20 --out runs/quick.nc",
    # 3 min (5 sizes x 8 seeds to step 10) -> 3 sizes x 2 seeds to step 1
    "dmft-probe coord --axis N --values 4,8,16,32,64 --steps 0,1,3,10 --task vision --optimizer adam "
    "--out runs/coord-N.nc": "dmft-probe coord --axis N --values 4,8,16 --steps 0,1 --seeds 2 --task vision --optimizer adam "
    "--out runs/coord-N.nc",
    # 51 s (5 sizes x 4 seeds at init) -> 3 sizes x 3 seeds
    "dmft-probe sweep --axis N --values 4,8,16,32,64 --seeds 4 --init-only --param mup --out runs/init-N.nc": "dmft-probe sweep --axis N --values 4,8,16 --seeds 3 --init-only --param mup --out runs/init-N.nc",
}


def blocks() -> list[tuple[str, str]]:
    """The README's (language, text) code blocks, in order."""
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def commands(text: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(re.sub(r"\s+", " ", line))
    return out


def syntax_only(text: str) -> bool:
    return any(c in SYNTAX_ONLY for c in commands(text))


def test_lists_name_only_what_the_readme_has():
    """A stale entry in SYNTAX_ONLY or SHORT would let a changed README command go untested."""
    cmds = [c for lang, text in blocks() if lang == "bash" for c in commands(text)]
    assert [c for c in SYNTAX_ONLY if c not in cmds] == []
    assert [c for c in SHORT if c not in cmds] == []


def test_readme_links_exist():
    """Every relative link of the README (docs pages, LICENSE, CITATION.cff, ...) points at a file of the repository."""
    links = LINK.findall(README.read_text(encoding="utf-8"))
    assert links, "no relative links found: the pattern is stale"
    assert [link for link in links if not (ROOT / link).exists()] == []


def test_syntax_only_blocks_parse():
    chosen = [text for lang, text in blocks() if lang == "bash" and syntax_only(text)]
    assert len(chosen) == len(SYNTAX_ONLY)
    for text in chosen:
        result = subprocess.run(["bash", "-n", "-c", text], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        for path in SHIPPED.findall(text):
            assert (ROOT / path).exists(), path


def _shim(bin_dir: Path) -> dict[str, str]:
    """PATH with a `dmft-probe` that runs this checkout's CLI under this interpreter."""
    bin_dir.mkdir()
    shim = bin_dir / "dmft-probe"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "from cli import app; app()" "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["MPLBACKEND"] = "Agg"
    return env


def test_readme_blocks_run_and_make_the_files_they_name(tmp_path):
    env = _shim(tmp_path / "bin")
    work = tmp_path / "work"
    work.mkdir()
    ran = 0
    for i, (lang, text) in enumerate(blocks()):
        if lang == "bash" and syntax_only(text):
            continue
        if lang == "bash":
            script = "set -e\n" + "\n".join(SHORT.get(c, c) for c in commands(text))
            argv = ["bash", "-c", script]
        else:
            path = tmp_path / f"block{i}.py"
            path.write_text(text, encoding="utf-8")
            argv = [sys.executable, str(path)]
        result = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, f"README block {i} ({lang}) failed:\n{text}\n{result.stdout}\n{result.stderr}"
        missing = [p for p in MADE.findall(text) if not (work / p).exists()]
        assert missing == [], f"README block {i} names {missing}, which it did not make:\n{text}"
        ran += 1
    assert ran >= 4, "the worked example's blocks were not found"


@pytest.mark.parametrize(
    "text",
    [
        "dmft-probe run --scale 4 \\\n    --out runs/a.nc  # a comment\n# only a comment\n\ndmft-probe check runs/a.nc",
    ],
)
def test_commands_join_continuations_and_drop_comments(text):
    assert commands(text) == ["dmft-probe run --scale 4 --out runs/a.nc", "dmft-probe check runs/a.nc"]
