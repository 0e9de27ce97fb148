"""--help shows what the help strings say: rich reads `[word]` as markup and drops it unless escaped (`\\[word]`).

The install hint of --executor, `pip install -e '.[ray]'`, once showed as `pip install -e '.'` (issue 21).
"""

import re

import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250", "NO_COLOR": "1"}


def _help(command: str) -> str:
    result = runner.invoke(app, [command, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return re.sub(r"\s+", " ", result.output.replace("│", " "))


@pytest.mark.parametrize("command", ["sweep", "coord"])
def test_executor_help_names_the_ray_extra(command):
    text = _help(command)
    assert "pip install -e '.[ray]'" in text, text
