"""Several worker processes on one study, SIGKILL durability, and a real PostgreSQL server.

The workers run ``search_toy.py`` (a toy objective: these tests are about storage,
budget slots and durability). The PostgreSQL test starts its own server (Debian's
``postgresql`` package) on loopback in a temporary folder and stops it afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from search_toy import OBJECTIVES, SPACE

from canonc.search.study import open_study

TOY = Path(__file__).with_name("search_toy.py")
ROOT = TOY.parent.parent
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _worker(url: str, log: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(TOY), url, "s", "--log", str(log), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> None:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]


def _study(url: str):
    return open_study(url, "s", SPACE, OBJECTIVES, "grid", context={"toy": 1}, mode="resume", budget=32, heartbeat_s=1)


def _check_two_workers(url: str, tmp: Path, trials: int) -> None:
    """Two workers share a budget of ``trials`` grid points: every point runs once, both workers work."""
    logs = [tmp / "a.log", tmp / "b.log"]
    procs = [_worker(url, log, "--trials", str(trials), "--sleep", "0.3") for log in logs]
    for proc in procs:
        _finish(proc)
    started = [line for log in logs for line in log.read_text().splitlines()]
    assert len(started) == trials and len(set(started)) == trials  # no grid point was even started twice
    assert all(log.read_text() for log in logs)  # both workers ran trials
    done = _study(url).completed()
    assert len(done) == trials
    assert sorted(t.user_attrs["slot"] for t in done) == list(range(trials))
    assert len({str(t.user_attrs["config"]) for t in done}) == trials


@pytest.mark.slow
def test_two_sqlite_workers_finish_the_budget_without_duplicates(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _check_two_workers(url, tmp_path, 16)


@pytest.mark.slow
def test_sigkill_loses_only_the_running_trial(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    log = tmp_path / "started.log"
    proc = _worker(url, log, "--mode", "new", "--trials", "8", "--sleep", "1.5")
    deadline = time.monotonic() + 180
    while (not log.exists() or len(log.read_text().splitlines()) < 4) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # inside the 4th trial
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    before = {t.number: t.values for t in _study(url).completed()}
    killed = [t for t in _study(url).study.get_trials() if t.state == TrialState.RUNNING]
    assert len(before) == 3 and len(killed) == 1

    _finish(_worker(url, tmp_path / "resumed.log", "--mode", "resume", "--trials", "8"))
    study = _study(url)
    after = {t.number: t.values for t in study.completed()}
    assert {n: after[n] for n in before} == before  # every completed trial is still there, unchanged
    assert len(after) == 8
    assert study.study.get_trials()[killed[0].number].state == TrialState.FAIL  # failed by its stale heartbeat
    assert sorted(t.user_attrs["slot"] for t in study.completed()) == list(range(8))
    killed_slot = killed[0].user_attrs["slot"]
    assert len(study.claims.holders()[killed_slot]) == 2  # the killed trial's slot was claimed again


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if found[-1]:
        return Path(found[-1]).parent
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], capture_output=True, timeout=600)
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        return Path(found[-1]).parent if found else None
    return None


@pytest.fixture
def postgres_url():
    """A PostgreSQL server on a free loopback port with an empty database; stopped afterwards."""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install 'canonc[postgres]')")
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries and they cannot be installed (apt-get install postgresql)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root without a 'postgres' user to start the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    home = Path(tempfile.mkdtemp(prefix="canonc-pg-"))
    if as_user:
        shutil.chown(home, "postgres")
    data = home / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(home / "log"), "-o",
                    f"-c listen_addresses=127.0.0.1 -p {port} -k {home}", "start"], check=True, capture_output=True)
    try:
        subprocess.run([*as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                        "canonc"], check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/canonc"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(postgres_url, tmp_path):
    _check_two_workers(postgres_url, tmp_path, 16)
