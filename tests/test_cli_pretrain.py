"""``napari-ssl pretrain``: a run with a progress bar, one-line errors for bad input, Ctrl-C saves. The runs use a
synthetic CT (:mod:`synthetic`): none of these tests needs the real scans."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic import write_ct

from napari_ssl import checkpoint, cli

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--batch-size",
    "1",
    "--patch-size",
    "32",
    "--backbone",
    "tiny",
    "--threads",
    "1",
    "--val-samples",
    "1",
]


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Path:
    """A folder holding one synthetic CT (48 x 64 x 64 voxels of 3 mm, HU)."""
    folder = tmp_path_factory.mktemp("synthetic") / "ct"
    write_ct(folder)
    return folder


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["pretrain", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_describes_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--help"])
    out = capsys.readouterr().out
    assert "Self-supervised pretraining" in out
    for option in (
        "--pretext",
        "--data",
        "--out",
        "--steps",
        "--batch-size",
        "--patch-size",
        "--backbone",
        "--device",
        "--seed",
        "--resume",
        "--config",
    ):
        assert option in out


def test_run_then_resume(capsys: pytest.CaptureFixture[str], ct: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    data = str(ct)
    code, stdout, err = _run(
        capsys, "--pretext", "context", "--data", data, "--out", str(out), "--steps", "2", *TINY
    )
    assert code == 0, err
    assert "finished step 2" in stdout and "context/psnr_gain" in stdout
    assert "2/2" in err  # the progress bar
    code, stdout, err = _run(capsys, "--resume", str(out), "--steps", "3", "--quiet")
    assert code == 0, err
    assert checkpoint.open_checkpoint(out).step == 3
    assert stdout.count("\n") == 1 and err == ""


def test_config_file(capsys: pytest.CaptureFixture[str], ct: Path, tmp_path: Path) -> None:
    settings = {
        "pretexts": ["context"],
        "data": [str(ct)],
        "steps": 1,
        "batch_size": 1,
        "patch_size": 32,
        "backbone": "tiny",
        "num_threads": 1,
        "val_samples": 0,
    }
    (tmp_path / "c.json").write_text(json.dumps(settings))
    (tmp_path / "c.toml").write_text('pretexts = ["context"]\nsteps = 1\nbackbone = "tiny"\n')
    code, _, err = _run(capsys, "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "a"), "--quiet")
    assert code == 0, err
    assert checkpoint.open_checkpoint(tmp_path / "a").config["backbone"] == "tiny"
    code, _, err = _run(
        capsys,
        "--config",
        str(tmp_path / "c.toml"),
        "--data",
        str(ct),
        "--out",
        str(tmp_path / "b"),
        "--patch-size",
        "32",
        "--threads",
        "1",
        "--val-samples",
        "0",
        "--normalization",
        "ct",
        "--window",
        "-200",
        "300",
        "--quiet",
    )
    assert code == 0, err
    meta = checkpoint.open_checkpoint(tmp_path / "b")
    assert meta.normalization.to_dict() == {"mode": "ct", "window": [-200.0, 300.0], "percentiles": [0.5, 99.5]}
    assert meta.config["backbone"] == "tiny" and meta.config["steps"] == 1


def _bad_inputs(scans: Path, tmp: Path) -> list[tuple[list[str], str]]:
    broken = tmp / "broken.nii.gz"
    broken.write_bytes(b"\x00garbage, not a scan")
    (tmp / "bad.json").write_text("{oops")
    ct = str(scans / "ct.nii.gz")
    out = ["--out", str(tmp / "out")]
    return [
        (["--pretext", "context", "--data", str(tmp / "missing"), *out], "no such file or directory"),
        (["--pretext", "context", "--data", str(broken), *out, *TINY], "broken.nii.gz"),
        (["--pretext", "context", "--data", ct, *out, "--minutes", "0"], "minutes must be a positive number"),
        (["--pretext", "jigsaw", "--data", ct, *out], "pretext must be distinct names among"),
        (["--pretext", "context", *out], "no data given"),
        (["--data", ct, *out], "no pretext given"),
        (["--pretext", "context", "--data", ct, *out, "--device", "cuda:7", *TINY], "not available"),
        (["--pretext", "context", "--data", ct, *out, "--patch-size", "8"], "patch_size must be a multiple of 16"),
        (["--config", str(tmp / "bad.json"), *out], "bad.json"),
        (["--resume", str(tmp / "nothing-here"), "--data", ct], "does not exist"),
        (["--pretext", "context", "--data", ct, "--out", str(tmp), *TINY], "refusing to overwrite"),
    ]


def test_bad_inputs_print_one_line(capsys: pytest.CaptureFixture[str], ct: Path, tmp_path: Path) -> None:
    for argv, message in _bad_inputs(ct, tmp_path):
        code, _, err = _run(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 2, (argv, err)
        assert len(lines) == 1, (argv, err)
        assert lines[0].startswith("napari-ssl pretrain: error: ")
        assert "Traceback" not in err
        assert re.search(message, lines[0]), (message, lines[0])
    assert not (tmp_path / "out").exists()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_bad_input_in_a_real_process(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_ssl.cli",
            "pretrain",
            "--pretext",
            "rubik",
            "--data",
            str(tmp_path / "nope"),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no such file or directory" in proc.stderr


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_with_one_line(ct: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # Ctrl-C's handler, whatever started pytest: a shell that runs it in the background (`nohup ... &`, a CI step)
    # hands it SIGINT ignored, which its children inherit, and the run would never see the signal
    restore = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
               "sys.argv[0] = 'napari-ssl'; runpy.run_module('napari_ssl.cli', run_name='__main__')")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            restore,
            "pretrain",
            "--pretext",
            "context",
            "--data",
            str(ct),
            "--out",
            str(out),
            "--steps",
            "100000",
            "--save-every",
            "0",
            *TINY,
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        lines = [proc.stderr.readline()]  # the plan, then "training on ..." once the data and the model are ready
        while "training on" not in lines[-1] and lines[-1] and len(lines) < 20:
            lines.append(proc.stderr.readline())
        lines = [line for line in lines if "preparing scans in" not in line]  # the prepared dataset's progress
        assert lines[0].startswith("plan (CT") and "training on" in lines[-1], lines
        first = proc.stderr.readline()  # not a terminal: the bar writes a line at the first step, then every 5%
        assert "] 1/100000 loss" in first, first
        proc.send_signal(signal.SIGINT)  # a step has been trained: there is something to save
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    said = re.fullmatch(r"napari-ssl pretrain: interrupted; checkpoint at step (\d+) saved in (.+)", lines[-1])
    assert said and Path(said[2]) == out, err
    state, meta = checkpoint.load(out)
    assert state and meta.total == 100000
    assert meta.step == int(said[1]) >= 1, (meta.step, lines[-1])
    assert len(meta.history["loss"]) == meta.step  # the saved run ends at the step it names
