"""The console script: --help lists the commands; bad input is one line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from napari_ssl import cli


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in cli.available_commands():
        assert name in out
    assert "demo" in out


def test_console_script_is_installed():
    # the script pip installed beside this interpreter (a pyenv shim on PATH needs the user's own HOME)
    beside = Path(sys.executable).with_name("napari-ssl")
    out = subprocess.run(
        [str(beside) if beside.is_file() else "napari-ssl", "--help"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
    )
    assert out.returncode == 0
    assert "demo" in out.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--screenshot", "/tmp/x.jpg"], "must name a .png"),
        (["demo", "--screenshot", "/nonexistent-dir/x.png"], "does not exist"),
    ],
)
def test_bad_arguments_give_one_line(argv, message):
    out = subprocess.run(
        [sys.executable, "-m", "napari_ssl.cli", *argv],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in out.stderr
