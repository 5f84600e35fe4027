"""scripts/device_round.sh end to end on the CPU: job lists, archives, and resuming on a fresh machine.

The round runs in a copy of the repository's layout (its scripts, ``src``, a toy config) with
stand-ins for ``nvidia-smi`` (one GPU) and the MPS daemon, so that the shell script itself, not
only the Python it calls, is exercised before a device call depends on it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from test_train_toytasks import SRC, TESTS, write_config

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("bash", "tar", "find", "timeout")  # what the script calls besides python and the GPU's tools
pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in TOOLS), reason=f"device_round.sh needs {', '.join(TOOLS)}"
)


def _machine(path: Path) -> Path:
    """A fresh machine: the repository's scripts and package, a toy config and two job lists."""
    (path / "scripts").mkdir(parents=True)
    for script in ("device_round.sh", "device_queue.py"):
        shutil.copy(ROOT / "scripts" / script, path / "scripts" / script)
    (path / "src").mkdir()
    (path / "src" / "lipschitz_rnn").symlink_to(SRC / "lipschitz_rnn")
    (path / "src" / "test_train_toytasks.py").symlink_to(TESTS / "test_train_toytasks.py")
    (path / "configs").mkdir()
    write_config(path / "configs", name="toy")
    (path / "first.txt").write_text("# a list\nconfigs/toy.toml:0:experiment.name=first\n")
    (path / "second.txt").write_text("configs/toy.toml:0:experiment.name=second,train.epochs=1\n")
    return path


def _device_round(machine: Path, bin_dir: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "OUT": str(out),
        "LIMIT": "240",
        "BENCH": "0",
        "GPU_TESTS": "--version",  # the GPU test step runs, and tests nothing on a CPU
        "LONG": "first.txt second.txt",
        "OMP_NUM_THREADS": "1",
        **env,
    }
    environ.pop("CUDA_MPS_PIPE_DIRECTORY", None)
    return subprocess.run(
        ["bash", "scripts/device_round.sh"], cwd=machine, env=environ, capture_output=True, text=True, timeout=300
    )


def _round(machine: Path, bin_dir: Path, out: Path, **env: str) -> str:
    """Run a round that must succeed; its status.txt (one line per run of the job lists)."""
    result = _device_round(machine, bin_dir, out, **env)
    assert result.returncode == 0, result.stdout + result.stderr
    with tarfile.open(out / "logs.tgz") as logs:
        return logs.extractfile("./status.txt").read().decode()


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """``nvidia-smi`` that lists one GPU, an MPS control that accepts anything, and ``python``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: stand-in (UUID: GPU-0)'\n")
    (bin_dir / "nvidia-cuda-mps-control").write_text("#!/bin/sh\ncat > /dev/null 2>&1 || true\n")
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # this interpreter, venv and all
    for stub in ("nvidia-smi", "nvidia-cuda-mps-control", "python"):
        (bin_dir / stub).chmod(0o755)
    return bin_dir


def _commands(run: Path) -> list[list[str]]:
    return [json.loads(line)["command"] for line in run.with_suffix(".queue.jsonl").read_text().splitlines()]


def test_a_round_runs_every_long_list_and_a_fresh_machine_resumes_from_its_archives(tmp_path, bin_dir):
    first_machine = _machine(tmp_path / "first_machine")
    status = _round(first_machine, bin_dir, tmp_path / "out1")
    assert status == "done runs/first/seed0\ndone runs/second/seed0\n"  # both lists, in the order named

    # the second run as a call's deadline would have left it: checkpointed, without its summary
    (first_machine / "runs" / "second" / "seed0" / "summary.json").unlink()
    out2 = tmp_path / "out2"
    subprocess.run(
        [sys.executable, "scripts/device_queue.py", "--pack-only", "--out", str(out2), "@first.txt", "@second.txt"],
        cwd=first_machine,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": "src"},
        check=True,
        capture_output=True,
    )
    carried = tmp_path / "carried"
    carried.mkdir()
    for archive in out2.glob("runs-*.tgz"):
        shutil.copy(archive, carried)

    fresh = _machine(tmp_path / "fresh_machine")
    status = _round(fresh, bin_dir, tmp_path / "out3", RESUME=str(carried))
    assert status == "done runs/first/seed0\ndone runs/second/seed0\n"
    runs = fresh / "runs"
    assert len(_commands(runs / "first" / "seed0")) == 1  # finished before: restored, not trained again
    resumed = _commands(runs / "second" / "seed0")
    assert len(resumed) == 2 and "--resume" in resumed[-1]  # from the carried checkpoint, not from scratch
    summary = json.loads((runs / "second" / "seed0" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 1


def test_a_round_stops_on_a_corrupt_archive_before_training(tmp_path, bin_dir):
    machine = _machine(tmp_path / "machine")
    carried = tmp_path / "carried"
    carried.mkdir()
    (carried / "runs-results.tgz").write_bytes(b"not a gzip file")
    result = _device_round(machine, bin_dir, tmp_path / "out", RESUME=str(carried))
    assert result.returncode == 1
    assert "cannot unpack" in result.stdout and "runs-results.tgz" in result.stdout  # named, no traceback
    assert "Traceback" not in result.stdout
    assert not (machine / "runs" / "first").exists()


def test_a_round_that_cannot_pack_says_why_and_fails(tmp_path, bin_dir):
    # a round that trained nothing and wrote no archives must not pass for a finished one
    machine = _machine(tmp_path / "machine")
    (machine / "scripts" / "device_queue.py").write_text(  # a queue that trains nothing and cannot pack
        'import sys\nif "--pack-only" in sys.argv:\n    raise SystemExit("device_queue: stand-in packing failure")\n'
    )
    result = _device_round(machine, bin_dir, tmp_path / "out", LONG="first.txt")
    assert result.returncode != 0
    assert "stand-in packing failure" in result.stdout
    assert (tmp_path / "out" / "logs.tgz").is_file()  # the logs still come back
