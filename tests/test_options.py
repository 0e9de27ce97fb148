"""The one option table (`probes.experiment.options`) and the CLI cannot drift apart: every entry is an option of
each command it belongs to, with the table's flag; every option of a config command is in the table or in
NOT_CONFIG; and the config loader names a value by the table's flag."""

import pytest
import typer

from cli import app
from probes.experiment.config import Names, make_run_config
from probes.experiment.options import (
    CONFIG_COMMANDS,
    NOT_CONFIG,
    OPTIONS,
    commands_of,
    flag_of,
)

COMMANDS = typer.main.get_command(app).commands


def flags(command: str) -> dict[str, object]:
    """{flag: click parameter} of a command, both halves of a --x/--no-x switch."""
    out = {}
    for p in COMMANDS[command].params:
        for f in (*p.opts, *p.secondary_opts):
            if f.startswith("--"):
                out[f] = p
    return out


def test_every_table_entry_is_an_option_of_its_commands():
    for o in OPTIONS:
        for command in commands_of(o):
            have = flags(command)
            for f in (o.decl or o.flag).replace("/", " ").split():
                assert f in have, f"{o.flag} ([{o.section}] {o.key}) is in the table for {command}, not in its options"


def test_every_option_of_a_config_command_is_in_the_table():
    for command in CONFIG_COMMANDS:
        table = {f for o in OPTIONS if command in commands_of(o) for f in (o.decl or o.flag).replace("/", " ").split()}
        for f, p in flags(command).items():
            if {*p.opts, *p.secondary_opts} & set(NOT_CONFIG):  # the command's own (--progress/--no-progress)
                continue
            assert f in table, f"{command} {f} sets no key of the option table (probes.experiment.options)"


def test_a_flag_means_one_key_per_command():
    for command in CONFIG_COMMANDS:
        seen: dict[str, tuple[str, str]] = {}
        for o in OPTIONS:
            if command in commands_of(o) and o.commands != ():
                assert seen.setdefault(o.flag, (o.section, o.key)) == (o.section, o.key), (command, o.flag)


def test_messages_name_the_tables_flags(tmp_path):
    names = Names({"param": {"gamma0": 2.0}, "run": {"data_path": "x"}}, {})
    assert names.name("param", "gamma0") == "--gamma0"
    assert names.name("run", "data_path") == "--data ([run] data_path)"
    assert flag_of("optim", "name") == "--optimizer" and flag_of("model", "ffn_mult") is None
    with pytest.raises(ValueError, match=r"^--weight-decay \(\[optim\] weight_decay\) must be"):
        make_run_config(None, optim={"weight_decay": -1.0})
    conf = tmp_path / "c.toml"
    conf.write_text("[optim]\nweight_decay = -1.0\n")
    with pytest.raises(ValueError, match=rf"^\[optim\] weight_decay in {conf} must be"):
        make_run_config(str(conf))
