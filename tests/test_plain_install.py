"""A plain install runs every command to the end.

The cluster files, the Dockerfile and the README's cluster section install the package with
`pip install .`, without extras. This test makes such an environment from scratch (a fresh
virtual environment, torch by `.ci/install-torch` as the Makefile does, then `pip install .`
of this checkout with no extras, not editable, so a file missing from the package shows) and
runs the smoke path of every stage in it, each as its own process, as a user would (training
through `sssl compare`, whose arms are trained by the same code as `sssl train`). A command
that imports something only an extra provides fails here instead of after hours of training
on a cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], env: dict[str, str], timeout: int = 1200) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def _start(cmd: list[str], env: dict[str, str], logs: Path) -> tuple[subprocess.Popen, Path]:
    """A command in the background, beside others (most of each one's time is start-up:
    imports and an in-process Ray); returns it with the file its stderr goes to. Output goes to
    files: a full pipe would stall a command until the ones before it had finished."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / cmd[1]  # the subcommand: each runs once
    with log.with_suffix(".out").open("w") as out, log.with_suffix(".err").open("w") as err:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=err), log.with_suffix(".err")


def _finish(started: list[tuple[subprocess.Popen, Path]]) -> None:
    """Waits for commands from _start, each checked as _run checks one."""
    for proc, err in started:
        proc.wait(timeout=1200)
        tail = err.read_text()[-3000:]
        assert proc.returncode == 0, f"{' '.join(proc.args)} exited {proc.returncode}:\n{tail}"


@pytest.fixture(scope="module")
def plain_env(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    venv = tmp_path_factory.mktemp("plain") / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], dict(os.environ))
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    # pip's --no-compile, for every pip run (install-torch's too): pip would byte-compile every
    # module of every package, most of torch's and ray's never imported here; the stages compile
    # what they import, as they would for a user.
    env["PIP_COMPILE"] = "0"
    # ...which they can only do where Python may write bytecode, as it does by default. With
    # PYTHONDONTWRITEBYTECODE inherited (this machine sets it), every process of every stage
    # (Ray's workers, Tune's trial, Train's controller) compiled torch and ray from source again:
    # `sssl tune`'s one trial took 86-101 s instead of 46-49 s.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    _run(["bash", str(REPO / ".ci" / "install-torch"), str(py)], env, timeout=1200)
    _run([str(py), "-m", "pip", "install", "-q", str(REPO)], env, timeout=1200)
    return venv, env


def test_plain_install_runs_every_stage(plain_env, tmp_path):
    venv, env = plain_env
    sssl = str(venv / "bin" / "sssl")
    # Nothing an extra brings is there: the test would prove nothing if the dev tools leaked in.
    probe = "import importlib.util as u; print(u.find_spec('pytest') is None)"
    assert _run([str(venv / "bin" / "python"), "-c", probe], env).strip() == "True"
    corpus, shards = tmp_path / "corpus", tmp_path / "shards"
    # `synth --smoke` makes enough songs of every class for the smoke runs' 2 folds.
    _run([sssl, "synth", "--smoke", "--out", str(corpus)], env)
    _run(
        [sssl, "shard", "--dataset", "synthetic", "--root", str(corpus), "--out", str(shards)],
        env,
    )
    # `compare` trains through the same run code as `train` (each arm's report has its own
    # model.sssl), so no separate `train` is needed. The sweep needs only the shards, so it runs
    # beside everything after them: beside `compare`, then beside `report` and `predict`, which
    # need the trained run. One trial is enough to prove the sweep's imports and outputs (the
    # sweep itself is tested in the dev environment).
    compared, swept = tmp_path / "compare", tmp_path / "tune"
    space = tmp_path / "one-trial.yaml"
    smoke = (REPO / "tuning" / "spaces" / "smoke.yaml").read_text()
    space.write_text(smoke.replace("tau: [0.5, 0.7]", "tau: [0.5]"))
    logs = tmp_path / "logs"
    started: list[tuple[subprocess.Popen, Path]] = []
    try:
        started.append(
            _start(
                [sssl, "tune", "--shards", str(shards), "--space", str(space), "--smoke",
                 "--workers", "1", "--out", str(swept)],
                env,
                logs,
            )
        )  # fmt: skip
        _run(
            [sssl, "compare", "--shards", str(shards), "--smoke", "--workers", "0", "--out",
             str(compared), "--arm", "inherit", "method=inherit", "--arm", "sssl"],
            env,
        )  # fmt: skip
        assert (compared / "comparison.md").is_file() and (compared / "forest.png").is_file()
        run = compared / "quadrant" / "sssl"
        # The report's tables and its plots: a plain install draws them too.
        assert (run / "summary.md").is_file() and (run / "metrics.json").is_file()
        assert list(run.glob("*.png")), "a plain install drew no plot"
        # What needs the trained run: report and predict side by side (and beside the sweep).
        audio = sorted(corpus.rglob("*.wav"))[:2]
        out = tmp_path / "predictions"
        started.append(_start([sssl, "report", str(run), "--shards", str(shards)], env, logs))
        started.append(
            _start(
                [sssl, "predict", str(run / "model.sssl"), *map(str, audio), "--out", str(out)],
                env,
                logs,
            )
        )
        _finish(started)
    finally:
        for proc, _ in started:
            proc.kill()
    assert (out / "predictions.csv").is_file()
    assert (swept / "summary.md").is_file()
