"""allocator.py: `jumplora run` relaunched under the mimalloc wheel, and the ways out of it."""

import os
import subprocess
import sys

import pytest

from jumplora import allocator

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD and /proc are Linux's")

# a child that says which malloc it runs under
REPORT = [sys.executable, "-c", "import os; from jumplora.allocator import preloaded_allocator; "
          "print(preloaded_allocator(), os.environ.get('MIMALLOC_ALLOW_THP'))"]


def _relaunch(env_changes: dict[str, str | None]) -> subprocess.CompletedProcess:
    """A process that relaunches REPORT under mimalloc and, where the relaunch declines, says so."""
    code = ("import sys; from jumplora import allocator; "
            f"allocator.relaunch_under_mimalloc({REPORT!r}); print('declined', allocator.preloaded_allocator())")
    env = dict(os.environ)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


@linux
def test_the_wheel_ships_the_library():
    library = allocator.mimalloc_library()
    assert library is not None and library.name == "libmimalloc.so" and library.stat().st_size > 100_000


@linux
def test_the_relaunched_process_runs_under_mimalloc():
    done = _relaunch({allocator.ENV: None, "JUMPLORA_RELAUNCHED": None, "MIMALLOC_ALLOW_THP": None})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "mimalloc 0"  # the exec replaced the process: no 'declined' line
    # a user's own mimalloc setting is kept
    done = _relaunch({allocator.ENV: None, "JUMPLORA_RELAUNCHED": None, "MIMALLOC_ALLOW_THP": "1"})
    assert done.stdout.strip() == "mimalloc 1"


@linux
@pytest.mark.parametrize("env", [{allocator.ENV: "glibc"}, {"JUMPLORA_RELAUNCHED": "1"}])
def test_glibc_asked_for_or_a_second_relaunch_stays_in_the_process(env):
    done = _relaunch({"JUMPLORA_RELAUNCHED": None, allocator.ENV: None, **env})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "declined None"


def test_main_called_from_python_never_relaunches(tmp_path, monkeypatch, capsys):
    from jumplora.cli import main

    def never(*args):
        raise AssertionError("main(argv) replaced the calling process")

    monkeypatch.setattr(os, "execve", never)
    monkeypatch.delenv(allocator.ENV, raising=False)
    monkeypatch.delenv("JUMPLORA_RELAUNCHED", raising=False)
    assert main(["run", "--model", "tiny", "--order", "no-such-task", "--output-dir", str(tmp_path / "r")]) == 2
    assert "no-such-task" in capsys.readouterr().err


def test_an_unknown_allocator_is_one_line_naming_the_variable(tmp_path):
    env = dict(os.environ, JUMPLORA_ALLOCATOR="jemalloc", HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-m", "jumplora", "run", "--model", "tiny", "--order", "cb",
                           "--output-dir", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "jumplora run: error: JUMPLORA_ALLOCATOR='jemalloc': expected one of mimalloc, glibc"]
    assert not (tmp_path / "run").exists()
