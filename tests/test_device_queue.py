"""scripts/device_queue.py: job specs, and the archives a GPU round sends back."""

import io
import json
import random
import re
import shutil
import signal
import sys
import tarfile
import time
from pathlib import Path

import pytest

from scripts_loader import load_script
from test_train_toytasks import write_config

ROOT = Path(__file__).resolve().parents[1]
device_queue = load_script("scripts/device_queue.py", "device_queue")


def test_jobs_from_specs_and_files(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    listing = tmp_path / "jobs.txt"
    listing.write_text(
        "# a comment\nconfigs/smnist/lipschitz_euler_n128.toml:0,2\n\n"
        "configs/pmnist/lipschitz_euler_n128.toml:1:model.num_layers=2,experiment.name=two_layers  # ours\n"
        'configs/smnist/lstm_n128.toml:4:experiment.notes="run #2",experiment.name=hash  # a "#" in quotes stays\n'
    )
    jobs = device_queue.parse_jobs([f"@{listing}", "configs/smnist/lstm_n128.toml:3"])
    assert [(job.name, job.seed) for job in jobs] == [
        ("smnist_lipschitz_euler_n128", 0),
        ("smnist_lipschitz_euler_n128", 2),
        ("two_layers", 1),
        ("hash", 4),
        ("smnist_lstm_n128", 3),
    ]
    assert jobs[2].overrides == ["model.num_layers=2", "experiment.name=two_layers"]
    assert jobs[3].overrides == ['experiment.notes="run #2"', "experiment.name=hash"]
    assert device_queue.strip_comment("a=[1,2]  # b=3") == "a=[1,2]  "
    assert jobs[2].run_dir == Path("runs/two_layers/seed1")
    with pytest.raises(SystemExit, match="no config file"):
        device_queue.parse_jobs(["configs/nope.toml:0"])


def test_override_values_keep_their_colons_commas_and_quotes(monkeypatch):
    monkeypatch.chdir(ROOT)
    (job,) = device_queue.parse_jobs(
        ['configs/pmnist/lipschitz_euler_n128.toml:0:task.permutation="seed:5544",train.lr_milestones=[20,30],'
         'experiment.name=perm']
    )  # fmt: skip
    assert job.overrides == ['task.permutation="seed:5544"', "train.lr_milestones=[20,30]", "experiment.name=perm"]
    assert job.name == "perm"


@pytest.mark.parametrize(
    ("job", "named"),
    [
        (":0:train.lr=0.1,oops", "'oops' must look like section.key=value"),
        (":0:train.lrr=0.1", "train.lrr: unknown key; did you mean 'lr'?"),
        (":0:train.lr=-1", "train.lr: must be > 0"),
        (":0:model.bta=0.8", "rejects its options"),
        (":0,x", "seeds must be integers >= 0"),
    ],
)
def test_a_job_train_would_refuse_stops_the_list_before_any_run_and_names_the_job(monkeypatch, job, named):
    monkeypatch.chdir(ROOT)
    spec = "configs/pmnist/lipschitz_euler_n128.toml" + job
    with pytest.raises(SystemExit, match=re.escape(named)) as stop:
        device_queue.parse_jobs(["configs/smnist/lstm_n128.toml:0", spec])
    assert repr(spec) in str(stop.value)


def test_every_committed_job_list_is_valid(monkeypatch):
    monkeypatch.chdir(ROOT)
    lists = sorted(ROOT.glob("scripts/*jobs*.txt"))
    assert lists and all(device_queue.parse_jobs([f"@{path}"]) for path in lists)


def _run(root: Path, name: str, finished: bool, checkpoint_bytes: int = 1000) -> None:
    run = root / "runs" / name / "seed0"
    for kind in ("best", "last"):
        (run / "checkpoints" / kind).mkdir(parents=True)
        (run / "checkpoints" / kind / "model.safetensors").write_bytes(b"w" * checkpoint_bytes)
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events").write_text("tb")
    (run / "meta.json").write_text("{}")
    (run / "metrics.jsonl").write_text("{}\n")
    if finished:
        (run / "summary.json").write_text("{}")


def _members(path: Path) -> set[str]:
    with tarfile.open(path) as archive:
        return {member.name for member in archive.getmembers() if member.isfile()}


def test_pack_sends_results_and_the_checkpoints_a_later_round_needs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(tmp_path, "done", finished=True)
    _run(tmp_path, "going", finished=False)
    out = tmp_path / "out"
    out.mkdir()
    device_queue.pack(out, part_bytes=1500)
    results = _members(out / "runs-results.tgz")
    assert "runs/done/seed0/summary.json" in results and "runs/going/seed0/metrics.jsonl" in results
    assert not any("/checkpoints/" in name or "/tensorboard/" in name for name in results)
    parts = sorted(out.glob("runs-ckpt-*.tgz"))
    assert len(parts) == 3  # 1,000-byte files in parts of at most 1,500 bytes
    checkpoints = set().union(*map(_members, parts))
    assert checkpoints == {
        "runs/done/seed0/checkpoints/best/model.safetensors",  # finished: best only
        "runs/going/seed0/checkpoints/best/model.safetensors",  # unfinished: both, to resume
        "runs/going/seed0/checkpoints/last/model.safetensors",
    }


def test_pack_keeps_every_archive_within_what_the_device_returns_results_first(tmp_path, monkeypatch, capsys):
    # Round 33's PTB checkpoints (8.8 MB weights and 17.6 MB optimizer state a run) filled the 64 MiB the
    # device returns, and it left out runs-results.tgz. Checkpoints here are random bytes: gzip cannot shrink them.
    monkeypatch.chdir(tmp_path)
    _run(tmp_path, "a_done", finished=True)
    _run(tmp_path, "b_going", finished=False)
    for name, kinds in (("a_done", ("best", "last")), ("b_going", ("best", "last"))):
        for kind in kinds:
            (tmp_path / "runs" / name / "seed0" / "checkpoints" / kind / "model.safetensors").write_bytes(
                random.Random(f"{name}{kind}").randbytes(40_000)
            )
    out = tmp_path / "out"
    out.mkdir()
    device_queue.pack(out, part_bytes=50_000, total_bytes=95_000, file_bytes=60_000)
    archives = sorted(out.glob("*.tgz"))
    assert out / "runs-results.tgz" in archives
    assert sum(path.stat().st_size for path in archives) <= 95_000
    assert all(path.stat().st_size <= 60_000 for path in archives)
    checkpoints = set().union(*map(_members, out.glob("runs-ckpt-*.tgz")))
    assert checkpoints == {  # the unfinished run's, to resume; the finished run's best did not fit
        "runs/b_going/seed0/checkpoints/best/model.safetensors",
        "runs/b_going/seed0/checkpoints/last/model.safetensors",
    }
    said = capsys.readouterr().out
    assert "1 checkpoint files did not fit" in said and "a_done/seed0" in said


def _two_unfinished_runs(root: Path, weight_bytes: int, state_bytes: int) -> None:
    """``runs/a_going`` and ``runs/b_going``: best and last weights, and the last optimizer state (incompressible)."""
    for name in ("a_going", "b_going"):
        _run(root, name, finished=False)
        checkpoints = root / "runs" / name / "seed0" / "checkpoints"
        for kind in ("best", "last"):
            (checkpoints / kind / "model.safetensors").write_bytes(
                random.Random(f"{name}{kind}").randbytes(weight_bytes)
            )
        (checkpoints / "last" / "state.pt").write_bytes(random.Random(f"{name}state").randbytes(state_bytes))


def test_pack_sends_what_resumes_every_unfinished_run_before_any_best_checkpoint(tmp_path, monkeypatch, capsys):
    # Round 34: two unfinished PTB runs, each with best weights, last weights and last optimizer state; packed
    # run by run, the second run's optimizer state did not fit, and the run could not resume elsewhere.
    monkeypatch.chdir(tmp_path)
    _two_unfinished_runs(tmp_path, weight_bytes=20_000, state_bytes=40_000)
    out = tmp_path / "out"
    out.mkdir()
    device_queue.pack(out, part_bytes=30_000, total_bytes=150_000, file_bytes=60_000)  # a part a file
    checkpoints = set().union(*map(_members, out.glob("runs-ckpt-*.tgz")))
    for name in ("a_going", "b_going"):
        assert f"runs/{name}/seed0/checkpoints/last/model.safetensors" in checkpoints
        assert f"runs/{name}/seed0/checkpoints/last/state.pt" in checkpoints
    assert "runs/a_going/seed0/checkpoints/best/model.safetensors" in checkpoints  # the room left: one best
    assert "runs/b_going/seed0/checkpoints/best/model.safetensors" not in checkpoints
    assert "1 checkpoint files did not fit" in capsys.readouterr().out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_unpack_restores_the_packed_runs_on_a_fresh_machine(tmp_path, monkeypatch):
    # the device hands a fresh machine only what is carried: the archives must rebuild runs/ so that
    # the unfinished run resumes from its last checkpoint
    monkeypatch.chdir(tmp_path)
    _run(tmp_path, "done", finished=True)
    _run(tmp_path, "going", finished=False)
    (tmp_path / "runs" / "going" / "seed0.queue.jsonl").write_text('{"exit": "killed"}\n')
    out = tmp_path / "out"
    out.mkdir()
    device_queue.pack(out, part_bytes=1500)
    sent = _files(tmp_path / "runs")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    monkeypatch.chdir(fresh)
    assert device_queue.unpack(out) == (len(sent) - 3, 0)
    restored = _files(fresh / "runs")
    assert restored == {name: data for name, data in sent.items() if name in restored}
    assert set(sent) - set(restored) == {  # what pack leaves out: nothing a resumed run reads
        "done/seed0/tensorboard/events",
        "going/seed0/tensorboard/events",
        "done/seed0/checkpoints/last/model.safetensors",  # finished: its last state is not needed
    }
    assert "going/seed0/checkpoints/last/model.safetensors" in restored


def test_resume_set_carries_results_and_last_checkpoints_without_any_best(tmp_path, monkeypatch, capsys):
    # Round 37: two unfinished PTB runs' archives were 62 MiB, over what a call may carry with the data;
    # their best checkpoints (17 MiB) are not needed to resume them
    monkeypatch.chdir(tmp_path)
    _run(tmp_path, "done", finished=True)
    _two_unfinished_runs(tmp_path, weight_bytes=9_000, state_bytes=5_000)
    out = tmp_path / "out"
    out.mkdir()
    device_queue.pack(out, part_bytes=25_000)  # b's state alone would leave room for a's best beside it
    parts = {path.name: _members(path) for path in out.glob("runs-ckpt-*.tgz")}
    for members in parts.values():  # pack never mixes them
        assert len({"/checkpoints/best/" in name for name in members}) == 1
    carried = tmp_path / "carry"
    names = sorted(path.name for path in device_queue.resume_set(out, carried))
    assert names == sorted(["runs-results.tgz", *(n for n, m in parts.items() if not any("/best/" in x for x in m))])
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    monkeypatch.chdir(fresh)
    device_queue.unpack(carried)
    restored = _files(fresh / "runs")
    for name in ("a_going", "b_going"):
        assert {f"{name}/seed0/checkpoints/last/model.safetensors", f"{name}/seed0/checkpoints/last/state.pt"} <= set(
            restored
        )
    assert not [name for name in restored if "/checkpoints/best/" in name]
    assert "done/seed0/summary.json" in restored  # the small files of every run come too
    with pytest.raises(SystemExit, match="no runs-results.tgz"):
        device_queue.resume_set(tmp_path / "empty", tmp_path / "elsewhere")
    with pytest.raises(SystemExit, match="already holds archives"):  # its parts would be unpacked with the new set
        device_queue.resume_set(out, carried)


@pytest.fixture
def packed_unfinished_run(tmp_path, monkeypatch) -> Path:
    """The archives of one unfinished run, ``runs/going/seed0``, packed in ``tmp_path/out`` (the cwd is tmp_path)."""
    monkeypatch.chdir(tmp_path)
    _run(tmp_path, "going", finished=False)
    out = tmp_path / "out"
    out.mkdir()
    device_queue.pack(out)
    return out


def test_unpack_keeps_the_runs_a_warm_machine_already_has(tmp_path, packed_unfinished_run):
    out = packed_unfinished_run
    newer = tmp_path / "runs" / "going" / "seed0" / "metrics.jsonl"
    newer.write_text("{}\n{}\n")  # trained on after the archive was written
    assert device_queue.unpack(out) == (0, 1)
    assert newer.read_text() == "{}\n{}\n"


@pytest.mark.parametrize("name", ["../outside", "/etc/passwd", "elsewhere/file", "runs/link"])
def test_unpack_refuses_members_that_are_not_files_under_runs(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    archive_path = tmp_path / "runs-results.tgz"
    with tarfile.open(archive_path, "w:gz") as archive:
        member = tarfile.TarInfo(name)
        if name == "runs/link":
            member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(member, None if name == "runs/link" else io.BytesIO(b""))
    with pytest.raises(SystemExit, match=re.escape(repr(name))):
        device_queue.unpack(tmp_path)
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "outside").exists()


def test_unpack_names_a_truncated_archive_and_writes_nothing_from_it(tmp_path, packed_unfinished_run):
    out = packed_unfinished_run
    shutil.rmtree(tmp_path / "runs")
    whole = (out / "runs-ckpt-0.tgz").read_bytes()
    (out / "runs-ckpt-0.tgz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(SystemExit, match="cannot unpack .*runs-ckpt-0.tgz"):
        device_queue.unpack(out)
    assert not list((tmp_path / "runs").rglob("checkpoints/*/*"))  # the results archive came through; no checkpoint


def test_unpack_names_a_folder_without_archives(tmp_path):
    with pytest.raises(SystemExit, match="no runs-results.tgz"):
        device_queue.unpack(tmp_path)


def test_pack_only_trains_nothing_and_reports_every_list(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    configs = tmp_path / "configs"
    configs.mkdir()
    config = write_config(configs, name="done")
    _run(tmp_path, "done", finished=True)
    _run(tmp_path, "going", finished=False)
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(f"{config}:0:experiment.name=going\n")
    monkeypatch.setattr(device_queue, "ROOT", tmp_path)
    monkeypatch.setattr(device_queue, "gpu_count", lambda: 1)
    monkeypatch.setattr(device_queue.subprocess, "Popen", lambda *a, **k: pytest.fail(f"ran {a}"))
    out = tmp_path / "out"
    argv = ["device_queue.py", "--pack-only", "--out", str(out), f"{config}:0", f"@{jobs}"]
    monkeypatch.setattr(sys, "argv", argv)
    device_queue.main()
    assert (out / "status.txt").read_text() == "done runs/done/seed0\nunfinished runs/going/seed0 1 epochs\n"
    assert "runs/done/seed0/summary.json" in _members(out / "runs-results.tgz")


def test_slots_deal_consecutive_jobs_to_the_gpus_in_turn():
    # the long jobs a list puts first must not share a GPU while another one idles
    assert device_queue.slot_gpus(2, 3) == [0, 1, 0, 1, 0, 1]
    assert device_queue.slot_gpus(1, 2) == [0, 0]
    assert device_queue.slot_gpus(4, 1) == [0, 1, 2, 3]


def test_per_gpu_without_mps_says_it_runs_one_job_per_gpu(tmp_path, monkeypatch, capsys):
    # without MPS, runs sharing a GPU are time-sliced, so the queue runs one per GPU and must say so
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "runs").mkdir()
    config = write_config(tmp_path / "configs", name="one")
    monkeypatch.setattr(device_queue, "ROOT", tmp_path)
    monkeypatch.setattr(device_queue, "gpu_count", lambda: 1)
    monkeypatch.setattr(device_queue.subprocess, "Popen", lambda *a, **k: pytest.fail(f"ran {a}"))
    out = tmp_path / "out"
    argv = ["device_queue.py", "--pack-only", "--per-gpu", "4", "--out", str(out), f"{config}:0"]
    monkeypatch.setattr(sys, "argv", argv)
    device_queue.main()
    printed = capsys.readouterr().out
    assert "--per-gpu 4 needs --mps" in printed
    assert "1 GPUs x 1 slots" in printed


class _RunAtTheDeadline:
    """A stand-in for ``subprocess.Popen`` of a run still going at the deadline; ``reaction`` is what SIGTERM does.

    "stops": exits 143 (``lipschitz-rnn train``'s graceful stop); "ignores": goes on until SIGKILL; "dies": ends
    at once (no handler yet, or training had returned); "finishes": exits 0 (a SIGTERM after the last epoch's training).
    """

    def __init__(self, command, reaction: str, wrote_summary: bool, sent: list) -> None:
        run_dir = Path(command[command.index("--out") + 1])
        run_dir.mkdir(parents=True)
        if wrote_summary:
            (run_dir / "summary.json").write_text("{}")
        self.command, self.reaction, self.sent, self.returncode = command, reaction, sent, None

    def wait(self, timeout=None):
        if self.returncode is None:
            assert timeout is not None, "waited without a timeout for a run that does not end"
            raise device_queue.subprocess.TimeoutExpired(self.command, timeout)
        return self.returncode

    def send_signal(self, signum):
        self.sent.append(signum)
        self.returncode = {"stops": 143, "ignores": None, "dies": -signum, "finishes": 0}[self.reaction]

    def kill(self):
        self.sent.append(signal.SIGKILL)
        self.returncode = -signal.SIGKILL


@pytest.mark.parametrize(
    ("wrote_summary", "reaction", "recorded", "signals"),
    [
        (False, "stops", "stopped at the deadline (checkpoint written; resumes next time)", ["SIGTERM"]),
        (False, "ignores", "killed at the deadline (resumes next time)", ["SIGTERM", "SIGKILL"]),
        (False, "dies", "killed at the deadline (resumes next time)", ["SIGTERM"]),
        (
            True,
            "ignores",
            "finished; killed at the deadline on its way out (its summary was written)",
            ["SIGTERM", "SIGKILL"],
        ),
        (True, "dies", "finished; killed at the deadline on its way out (its summary was written)", ["SIGTERM"]),
        (True, "finishes", 0, ["SIGTERM"]),
    ],
)
def test_a_run_stopped_at_the_deadline_is_recorded_by_how_it_ended(
    tmp_path, monkeypatch, wrote_summary, reaction, recorded, signals
):
    # the "killed" strings are those the queue wrote when it only killed runs (round 40's gated seed 2 was killed a
    # second after it wrote its summary): older records read the same
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    config = write_config(tmp_path / "configs", name="one")
    monkeypatch.setattr(device_queue, "ROOT", tmp_path)
    monkeypatch.setattr(device_queue, "gpu_count", lambda: 1)
    monkeypatch.setattr(device_queue, "STAGGER_SECONDS", 0.0)
    sent = []
    monkeypatch.setattr(
        device_queue.subprocess,
        "Popen",
        lambda command, **kwargs: _RunAtTheDeadline(command, reaction, wrote_summary, sent),
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    argv = ["device_queue.py", "--no-pack", "--out", str(tmp_path / "out"), f"{config}:0:experiment.name=one"]
    monkeypatch.setattr(sys, "argv", argv)
    device_queue.main()
    record = json.loads((tmp_path / "runs" / "one" / "seed0.queue.jsonl").read_text())
    assert record["exit"] == recorded
    assert record["signals"] == signals and [signal.Signals(s).name for s in sent] == signals
    assert record["returncode"] == {"stops": 143, "ignores": -9, "dies": -15, "finishes": 0}[reaction]


# A stand-in for `lipschitz-rnn train` (argv: run directory, job name): notes when a SIGTERM came in run/sigterm.
_ON_SIGTERM = """
import pathlib, signal, sys, time
run = pathlib.Path(sys.argv[1])
run.mkdir(parents=True)
def noted(signum, frame):
    (run / "sigterm").write_text(repr(time.time()))
    if sys.argv[2] == "stops":
        raise SystemExit(143)  # as train does after its step and checkpoint
signal.signal(signal.SIGTERM, noted)
(run / "ready").touch()
time.sleep(60)  # "ignores" sleeps on after the SIGTERM, until the SIGKILL
"""


def test_real_runs_get_sigterm_before_the_deadline_and_sigkill_at_it(tmp_path, monkeypatch):
    # three processes side by side: one stops on SIGTERM, one outlives it and is killed, one ends before the stop
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    config = write_config(tmp_path / "configs", name="one")
    monkeypatch.setattr(device_queue, "ROOT", tmp_path)
    monkeypatch.setattr(device_queue, "MIN_RUN_SECONDS", 0.0)
    monkeypatch.setattr(device_queue, "STAGGER_SECONDS", 0.0)
    monkeypatch.setattr(
        device_queue,
        "command_for",
        lambda job: [sys.executable, "-c", "pass" if job.name == "ends" else _ON_SIGTERM, str(job.run_dir), job.name],
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    limit, grace = 3.0, 1.0
    jobs = [f"{config}:0:experiment.name={name}" for name in ("stops", "ignores", "ends")]
    argv = ["device_queue.py", "--no-pack", "--gpus", "3", "--time-limit", str(limit), "--stop-grace", str(grace)]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(tmp_path / "out"), *jobs])
    began = time.time()
    device_queue.main()
    assert time.time() - began < limit + 1.0  # the queue still ends by its deadline

    def record(name: str) -> dict:
        (line,) = (tmp_path / "runs" / name / "seed0.queue.jsonl").read_text().splitlines()
        return json.loads(line)

    stops, ignores, ends = record("stops"), record("ignores"), record("ends")
    assert stops["exit"] == "stopped at the deadline (checkpoint written; resumes next time)"
    assert (stops["signals"], stops["returncode"]) == (["SIGTERM"], 143)
    assert ignores["exit"] == "killed at the deadline (resumes next time)"
    assert (ignores["signals"], ignores["returncode"]) == (["SIGTERM", "SIGKILL"], -9)
    assert ends["exit"] == 0 and "signals" not in ends
    sigterm = {}
    for name in ("stops", "ignores"):  # both were ready, and got their SIGTERM about `grace` before the deadline
        assert (tmp_path / "runs" / name / "seed0" / "ready").is_file()
        sigterm[name] = float((tmp_path / "runs" / name / "seed0" / "sigterm").read_text())
        assert began + limit - grace - 0.5 < sigterm[name] < began + limit - grace + 0.5
    ended = ignores["start"] + ignores["seconds"]
    assert sigterm["ignores"] + grace - 0.3 < ended < began + limit + 0.5  # killed a grace after it, by the deadline
    assert stops["start"] + stops["seconds"] < ended - grace / 2  # the one that stopped did not wait for the kill
