"""brain_audit.run_lock: one run per folder, against a real second process that holds the lock.

The holder is a separate Python process (``holder.py FOLDER``) that takes the lock and sleeps; what
the refusal must say (its PID, its command line) comes from ``subprocess``, not from the lock module.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from brain_audit.errors import ConfigError
from brain_audit.run_lock import LOCK_NAME, run_lock

REPO = Path(__file__).resolve().parents[1]
HOLDER = """\
import sys, time
from brain_audit.run_lock import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def _hold(tmp_path: Path, folder: Path) -> subprocess.Popen:
    """A second process holding the lock of ``folder``; returns once it holds it."""
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(folder)], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=tmp_path)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _in_use(folder: Path, proc: subprocess.Popen, option: str = "--out") -> str:
    return re.escape(f"`{folder}` is in use by PID {proc.pid} (`holder.py {folder}`); wait for it or use another {option}")


@pytest.fixture
def held(tmp_path):
    folder = tmp_path / "run"
    proc = _hold(tmp_path, folder)
    yield folder, proc
    proc.kill()
    proc.wait()


def test_a_folder_held_by_another_process_is_refused_with_its_pid_and_command(held):
    folder, proc = held
    with pytest.raises(ConfigError, match=f"^{_in_use(folder, proc)}$"):
        with run_lock(folder):
            pass
    with pytest.raises(ConfigError, match=_in_use(folder, proc, "--cache")):
        with run_lock(str(folder), option="--cache"):
            pass
    holder = json.loads((folder / LOCK_NAME).read_text())
    assert holder["pid"] == proc.pid and holder["argv"][1:] == [str(folder)]


def test_kill_9_leaves_no_stale_lock(tmp_path):
    folder = tmp_path / "run"
    proc = _hold(tmp_path, folder)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == proc.pid  # its name is still written there
    with run_lock(folder) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert (folder / LOCK_NAME).read_text() == ""  # released: an idle lock file is empty


def test_reentrant_in_one_process_and_released_by_the_outermost_block(tmp_path):
    folder = tmp_path / "run"
    with run_lock(folder):
        with run_lock(tmp_path / "run" / ".." / "run"):  # the same folder by another spelling
            assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert (folder / LOCK_NAME).read_text() != ""  # the inner block did not release it
        # meanwhile another process is refused
        probe = subprocess.run([sys.executable, "-c", HOLDER, str(folder)], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
        assert probe.returncode == 1 and f"is in use by PID {os.getpid()}" in probe.stderr
    assert (folder / LOCK_NAME).read_text() == ""
    proc = _hold(tmp_path, folder)  # and after the outermost block, another process gets it
    proc.kill()
    proc.wait()


def test_a_folder_that_cannot_be_made_is_the_os_error_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(NotADirectoryError) as caught:  # what the command line reports as "cannot write to ..."
        with run_lock(blocker / "run"):
            pass
    assert caught.value.filename == str(blocker / "run")


def test_prepare_and_cache_take_the_lock(held, tmp_path):
    from brain_audit.config import load_config
    from brain_audit.dataset.cache import build_cache
    from brain_audit.train.prepare import prepare_data

    folder, proc = held
    config = load_config(None, [f'data_root="{tmp_path / "data"}"', f'out_dir="{folder}"'])
    with pytest.raises(ConfigError, match=_in_use(folder, proc)):
        prepare_data(config, progress=False)
    with pytest.raises(ConfigError, match=_in_use(folder, proc)):
        build_cache(tmp_path / "cohort.csv", tmp_path / "data", folder, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing written


@pytest.mark.slow
def test_training_entry_points_and_the_demo_take_the_lock(held, tmp_path):
    from brain_audit.config import load_config
    from brain_audit.demo import run_demo
    from brain_audit.train.phases import run_all, run_phase
    from brain_audit.train.pretrain import run_pretrain

    folder, proc = held
    config = load_config(None, [f'data_root="{tmp_path / "data"}"', f'out_dir="{folder}"'])
    for call in (lambda: run_pretrain(config), lambda: run_phase(config, 1), lambda: run_phase(config, 3, force=True),
                 lambda: run_all(config), lambda: run_demo(folder)):
        with pytest.raises(ConfigError, match=_in_use(folder, proc)):
            call()
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]
