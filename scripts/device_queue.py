"""Train a list of experiments on every GPU of one machine within a time budget, resumably.

    OUT=out python scripts/device_queue.py --time-limit 540 --per-gpu 3 --mps \
        configs/smnist/lipschitz_euler_n128.toml:0,1,2 configs/pmnist/lstm_n128.toml:0 ...

Each job is ``CONFIG:SEEDS[:OVERRIDE,...]``; overrides are ``key=value`` pairs for
``lipschitz-rnn train`` (``experiment.name=...`` names a variant), separated by commas outside
brackets and quotes, and a value may hold ``:`` (``task.permutation="seed:5544"``). Jobs start in the order
given, ``--per-gpu`` at a time on each GPU, dealt out across the GPUs in turn (the first job
on GPU 0, the second on GPU 1, ...), so that the long jobs a list puts first do not share one
GPU. Every job's config and overrides are checked as ``lipschitz-rnn train`` checks them
before any run starts, so a typo stops the list at once and names its job.
A run lives in ``runs/<experiment>/seed<k>``:
one finished earlier (it has ``summary.json``) is skipped, one with a checkpoint resumes
(``--resume``), and the run still going at the deadline is stopped and resumes next time:
``--stop-grace`` seconds (20) before the deadline it gets SIGTERM, on which ``lipschitz-rnn train``
finishes its optimizer step, writes a ``last`` checkpoint that resumes exactly and exits with 143;
one still alive at the deadline is killed (SIGKILL) and resumes from its last periodic checkpoint.
Carry ``runs/`` between machines; results and checkpoints come back as ``$OUT/runs-*.tgz``, and
``--unpack DIR`` puts such archives back under ``runs/`` on a fresh machine, so that its runs resume;
``--resume-set SOURCE DEST`` (here, before that call) copies only the archives resuming needs, leaving
the best checkpoints out of what the call carries.
Two queues may share the GPUs (say a long list beside a search and its follow-up): run them
with ``--no-pack`` and pack once at the end with ``--pack-only`` and every job list.

Several runs share a GPU well only under MPS: without it, processes on one GPU are
time-sliced (three concurrent sMNIST runs measured 31 s per epoch each instead of 2.2 s
alone), because the fused recurrence is one long kernel on a few SMs. ``--mps`` starts the
MPS control daemon for the queue and stops it afterwards (or uses the one that
``CUDA_MPS_PIPE_DIRECTORY`` names, started and stopped by the caller); if a CUDA client
cannot start under it, the queue runs one job per GPU. Every attempt is logged in
``runs/<experiment>/seed<k>.queue.jsonl`` (GPU, concurrency, start, end, exit status), so
reported GPU times can be read with the concurrency they ran under; for a run stopped at the
deadline the exit is what became of it (see :func:`deadline_exit`), beside the signals sent and
the process's own status.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lipschitz_rnn.train.config import ConfigError, check_registries, load_config

ROOT = Path(__file__).resolve().parents[1]
MPS_ENV = {"CUDA_MPS_PIPE_DIRECTORY": "/tmp/mps-pipe", "CUDA_MPS_LOG_DIRECTORY": "/tmp/mps-log"}


@dataclass
class Job:
    config: str
    seed: int
    name: str  # experiment.name of the resolved config: the run directory is runs/<name>/seed<seed>
    overrides: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return Path("runs") / self.name / f"seed{self.seed}"


def finished(run_dir: Path) -> bool:
    """A run is finished once training wrote its ``summary.json`` (at the end, after its plots, or on divergence)."""
    return (run_dir / "summary.json").is_file()


def parse_jobs(specs: list[str]) -> list[Job]:
    """Jobs from ``CONFIG:SEEDS[:OVERRIDES]`` specs; ``@FILE`` reads one spec per line (``#`` starts a
    comment outside quotes and brackets, so a quoted value may hold one)."""
    expanded = []
    for spec in specs:
        if spec.startswith("@"):
            lines = (strip_comment(line).strip() for line in open(spec[1:]))
            expanded += [line for line in lines if line]
        else:
            expanded.append(spec)
    jobs = []
    for spec in expanded:
        config, seeds, *rest = spec.split(":", 2)  # an override's value may hold ':' ("seed:5544")
        if not Path(config).is_file():
            sys.exit(f"device_queue: no config file {config!r} (in job {spec!r})")
        seed_list = seeds.split(",")
        if not all(seed.isdigit() for seed in seed_list):
            sys.exit(f"device_queue: seeds must be integers >= 0 joined by commas, got {seeds!r} (in job {spec!r})")
        overrides = split_overrides(rest[0]) if rest else []
        try:  # what `lipschitz-rnn train` would refuse stops the whole list before any run starts
            cfg = load_config(config, overrides)
            check_registries(cfg)
        except ConfigError as exc:
            sys.exit(f"device_queue: {exc} (in job {spec!r})")
        jobs += [Job(config, int(seed), cfg.experiment.name, overrides) for seed in seed_list]
    return jobs


def _scan(text: str) -> Iterator[tuple[str, bool]]:
    """Each character of ``text`` with whether it stands outside quotes and brackets (a closing quote or
    bracket counts as outside; the callers look only for ``#`` and ``,``)."""
    depth, quote = 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        yield char, not quote and depth == 0


def strip_comment(line: str) -> str:
    """The line up to its first ``#`` outside quotes and brackets (``a="x#1"  # why`` keeps ``a="x#1"``)."""
    kept = []
    for char, outside in _scan(line):
        if char == "#" and outside:
            break
        kept.append(char)
    return "".join(kept)


def split_overrides(text: str) -> list[str]:
    """``key=value`` overrides separated by commas outside brackets and quotes (``a=[1,2],b="x,y"``)."""
    parts, current = [], []
    for char, outside in _scan(text):
        if char == "," and outside:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part]


def slot_gpus(gpus: int, per_gpu: int) -> list[int]:
    """The GPU of each worker slot, in the order the slots start and take jobs: the GPUs in turn
    (0, 1, ..., 0, 1, ...), so that consecutive jobs of a list land on different GPUs."""
    return [gpu for _ in range(per_gpu) for gpu in range(gpus)]


def gpu_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 1  # no GPU: the jobs run on the CPU, one at a time (useful to test the queue)
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
    return max(1, sum(line.startswith("GPU ") for line in out.splitlines()))


def start_mps() -> tuple[bool, bool]:
    """``(running, started_here)``: start the MPS daemon unless one is named in the environment."""
    external = "CUDA_MPS_PIPE_DIRECTORY" in os.environ  # started by the caller, who also stops it
    if not external:
        for path in MPS_ENV.values():
            Path(path).mkdir(parents=True, exist_ok=True)
        os.environ.update(MPS_ENV)
        if shutil.which("nvidia-cuda-mps-control") is None:
            print("device_queue: nvidia-cuda-mps-control not found; one job per GPU", flush=True)
            return False, False
        subprocess.run(["nvidia-cuda-mps-control", "-d"], check=False)
    probe = "import torch; torch.ones(1, device='cuda').add_(1); torch.cuda.synchronize(); print('ok')"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    if result.stdout.strip() == "ok":
        print(f"device_queue: MPS is up ({'started by the caller' if external else 'started here'})", flush=True)
        return True, not external
    print(f"device_queue: a CUDA client failed under MPS ({result.stderr.strip()[-300:]}); one job per GPU", flush=True)
    if not external:
        stop_mps()
    return False, False


def stop_mps() -> None:
    subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, check=False)
    for key in MPS_ENV:
        os.environ.pop(key, None)


#: How long a run has, between the SIGTERM that stops it and the deadline, to finish its optimizer step and write
#: its ``last`` checkpoint (weights and optimizer state, tens of MB at most here: seconds even with several runs per
#: GPU writing at once). The rest leaves room for an evaluation under way, since a signal during one stops the run at
#: that epoch's end, with its checkpoint; a run still evaluating at the deadline is killed, as before.
STOP_GRACE_SECONDS = 20.0
#: A job starts only with at least this long to run before its stop begins (a run needs some of it to load its data).
MIN_RUN_SECONDS = 30.0
#: Between the starts of the workers, so that data loading and Triton compilation overlap less.
STAGGER_SECONDS = 2.0

STOPPED = "stopped at the deadline (checkpoint written; resumes next time)"
KILLED = "killed at the deadline (resumes next time)"
FINISHED_ON_ITS_WAY_OUT = "finished; killed at the deadline on its way out (its summary was written)"


def run_until(command: list[str], deadline: float, grace: float, **popen) -> tuple[int, list[str]]:
    """Run ``command`` until it exits or the deadline: ``(its exit status, the signals sent to it)``.

    ``grace`` seconds before ``deadline`` a process still running gets SIGTERM, and SIGKILL if it is still
    alive ``grace`` seconds later, so that it ends by the deadline. The status is Popen's: negative for a
    process ended by a signal (-15 when it had no handler for SIGTERM yet, -9 after SIGKILL). The signals go
    to the process itself, not to a group: its own children (data loader workers) are its to end.
    """
    process = subprocess.Popen(command, **popen)
    sent: list[str] = []
    try:
        try:
            return process.wait(timeout=max(0.0, deadline - grace - time.time())), sent
        except subprocess.TimeoutExpired:
            pass
        process.send_signal(signal.SIGTERM)
        sent.append("SIGTERM")
        try:
            return process.wait(timeout=grace), sent
        except subprocess.TimeoutExpired:
            pass
        process.kill()
        sent.append("SIGKILL")
        return process.wait(), sent
    except BaseException:  # as subprocess.run does: no process outlives the queue that started it
        process.kill()
        process.wait()
        raise


def deadline_exit(job: Job, returncode: int) -> int | str:
    """What the queue records for a run it stopped at the deadline, from the run's ``returncode`` after it.

    * 143 (``lipschitz-rnn train`` caught the SIGTERM): :data:`STOPPED`, its ``last`` checkpoint resumes exactly;
    * killed by a signal: SIGKILL after the grace, or the SIGTERM itself, which ends a run at once before its
      handlers are in (while it loads its data) or after training returned: :data:`KILLED`, it resumes from its
      last periodic checkpoint (or starts again, without one);
    * killed, but it wrote its summary: :data:`FINISHED_ON_ITS_WAY_OUT` (round 40's gated seed 2, killed a
      second after it logged "done"), and nothing of it resumes;
    * anything else (0: a SIGTERM after the last epoch's training lets the run finish; an error while stopping),
      as is.

    :data:`KILLED` and :data:`FINISHED_ON_ITS_WAY_OUT` are the strings the queue recorded when it only killed
    runs at the deadline (with SIGKILL), so older records read the same.
    """
    killed = returncode in (-signal.SIGTERM, -signal.SIGKILL)
    if killed and finished(job.run_dir):
        return FINISHED_ON_ITS_WAY_OUT
    if killed:
        return KILLED
    if returncode == 128 + signal.SIGTERM and not finished(job.run_dir):
        return STOPPED
    return returncode


def command_for(job: Job) -> list[str]:
    base = [sys.executable, "-m", "lipschitz_rnn", "train"]
    if (job.run_dir / "meta.json").is_file() and (job.run_dir / "checkpoints" / "last").is_dir():
        return [*base, "--resume", str(job.run_dir), "log.progress=false"]
    if job.run_dir.exists():
        shutil.rmtree(job.run_dir)  # started, but killed before its first checkpoint
    overrides = [f"train.seed={job.seed}", "log.progress=false", *job.overrides]
    return [*base, job.config, *overrides, "--out", str(job.run_dir)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jobs", nargs="*", help="CONFIG:SEEDS[:OVERRIDE,...] or @FILE of them")
    parser.add_argument("--time-limit", type=float, default=540, help="seconds from start until every job stops")
    parser.add_argument(
        "--stop-grace",
        type=float,
        default=STOP_GRACE_SECONDS,
        help="seconds before the deadline that a running job gets SIGTERM (to finish its step and write a "
        "checkpoint); one still alive at the deadline gets SIGKILL",
    )
    parser.add_argument("--per-gpu", type=int, default=1, help="concurrent jobs per GPU")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs to use (0: all)")
    parser.add_argument("--mps", action="store_true", help="run the jobs under the MPS control daemon")
    parser.add_argument("--out", default=os.environ.get("OUT", "out"))
    parser.add_argument("--no-pack", action="store_true", help="leave the archives to a later --pack-only")
    parser.add_argument("--pack-only", action="store_true", help="write status and archives, train nothing")
    parser.add_argument("--unpack", metavar="DIR", help="restore runs/ from DIR's runs-*.tgz, then stop")
    parser.add_argument(
        "--resume-set",
        nargs=2,
        metavar=("SOURCE", "DEST"),
        help="copy to DEST only SOURCE's archives that resuming needs (no best checkpoints), then stop",
    )
    args = parser.parse_args()
    if args.resume_set:
        copied = resume_set(*map(Path, args.resume_set))
        total = sum(path.stat().st_size for path in copied)
        print(f"device_queue: {len(copied)} archives, {total / 2**20:.1f} MiB, in {args.resume_set[1]}: "
              + ", ".join(path.name for path in copied))  # fmt: skip
        return
    if args.unpack:
        os.chdir(ROOT)
        restored, kept = unpack(Path(args.unpack))
        print(f"device_queue: {restored} files restored from {args.unpack}; {kept} runs already here kept as they are")
        return
    if not args.jobs:
        parser.error("name at least one job (or --unpack DIR)")
    if args.stop_grace < 0:
        parser.error("--stop-grace must be >= 0")

    deadline = time.time() + args.time_limit
    os.chdir(ROOT)
    os.environ.setdefault("PYTHONPATH", "src")
    os.environ.setdefault("LIPSCHITZ_RNN_DATA", "data")
    os.environ["PYTHONUNBUFFERED"] = "1"
    jobs = [job for job in parse_jobs(args.jobs) if not finished(job.run_dir)]
    if args.pack_only:
        jobs = []
    gpus = args.gpus or gpu_count()
    mps, started_mps = start_mps() if (args.per_gpu > 1 and args.mps) else (False, False)
    per_gpu = args.per_gpu if mps else 1
    if args.per_gpu > 1 and not args.mps:  # said aloud: this fallback was silent, and cost a round-23 call its slots
        print(f"device_queue: --per-gpu {args.per_gpu} needs --mps (runs time-sliced crawl); one per GPU", flush=True)
    print(f"device_queue: {len(jobs)} unfinished jobs, {gpus} GPUs x {per_gpu} slots", flush=True)

    lock = threading.Lock()
    pending = list(jobs)

    def worker(gpu: int) -> None:
        while True:
            with lock:
                if not pending:
                    return
                job = pending.pop(0)
            if deadline - args.stop_grace - time.time() < MIN_RUN_SECONDS:
                return
            job.run_dir.parent.mkdir(parents=True, exist_ok=True)
            command = command_for(job)
            started = time.time()
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
            with open(job.run_dir.parent / f"seed{job.seed}.stdout", "a") as log:
                returncode, sent = run_until(
                    command, deadline, args.stop_grace, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            code = deadline_exit(job, returncode) if sent else returncode
            record = {
                "gpu": gpu,
                "jobs_per_gpu": per_gpu,
                "mps": per_gpu > 1,
                "omp_threads": int(os.environ["OMP_NUM_THREADS"]),
                "start": started,
                "seconds": round(time.time() - started, 1),
                "exit": code,
                "command": command,
            }
            if sent:  # stopped at the deadline: what the queue sent and how the process ended
                record.update(signals=sent, returncode=returncode)
            with open(job.run_dir.parent / f"seed{job.seed}.queue.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(
                f"device_queue: {job.name} seed {job.seed} on GPU {gpu}: {code} after {record['seconds']} s", flush=True
            )

    # Each run's CPU thread pools get a share of the cores: a dozen processes that each start one
    # OpenMP thread per core oversubscribe the CPU, and every small CPU op then waits on a barrier
    # (measured: 384 ms per pMNIST step instead of 5.5 with 15 runs on 64 cores).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, min(4, (os.cpu_count() or 1) // (gpus * per_gpu)))))
    threads = [threading.Thread(target=worker, args=(g,)) for g in slot_gpus(gpus, per_gpu) if jobs]
    for thread in threads:
        thread.start()
        time.sleep(STAGGER_SECONDS)
    for thread in threads:
        thread.join()
    if started_mps:
        stop_mps()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for job in parse_jobs(args.jobs):
        if finished(job.run_dir):
            lines.append(f"done {job.run_dir}")
        else:
            metrics = job.run_dir / "metrics.jsonl"
            epochs = sum(1 for _ in open(metrics)) if metrics.is_file() else 0
            lines.append(f"unfinished {job.run_dir} {epochs} epochs")
    (out / "status.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not args.no_pack:
        pack(out)


def pack(
    out: Path, part_bytes: int = 14 << 20, max_parts: int = 6, total_bytes: int = 62 << 20, file_bytes: int = 16 << 20
) -> None:
    """``runs-results.tgz`` (all but checkpoints and TensorBoard) and ``runs-ckpt-K.tgz`` parts.

    The device returns at most 8 files of 16 MiB (``file_bytes``) and 64 MiB in all, and leaves out
    whole files beyond that: a round whose checkpoints filled the 64 MiB lost its ``runs-results.tgz``.
    So the checkpoints go in parts of about ``part_bytes`` (a larger file goes alone), written in this
    order while the archives, results included, stay within ``total_bytes`` (the rest is for the logs):
    the last checkpoint of every unfinished run (weights and optimizer state: what resumes it on another
    machine), then, in parts of their own, their best checkpoints, then the best checkpoint of every
    finished run (for ``lipschitz-rnn analyze``). Whatever does not fit is named, and stays on the
    machine. (Round 34 packed each unfinished run's best beside its last, and the second run's optimizer
    state did not fit: that run could not resume on a fresh machine.)
    """
    runs = Path("runs")

    def results_only(info: tarfile.TarInfo):
        return None if ("/checkpoints" in info.name or "/tensorboard" in info.name) else info

    with tarfile.open(out / "runs-results.tgz", "w:gz") as archive:
        archive.add(runs, filter=results_only)
    to_resume, unfinished_best, finished_best = [], [], []
    for run_dir in sorted(p.parent for p in runs.glob("*/seed*/meta.json")):
        best = sorted(p for p in (run_dir / "checkpoints" / "best").rglob("*") if p.is_file())
        if finished(run_dir):
            finished_best += best
        else:  # best too: a resumed run writes "best" only when validation improves again
            to_resume += sorted(set(p for p in (run_dir / "checkpoints").rglob("*") if p.is_file()) - set(best))
            unfinished_best += best
    groups: list[list[Path]] = []
    size = 0
    for kind in (to_resume, unfinished_best + finished_best):  # no part mixes the two: see resume_set
        for position, path in enumerate(kind):
            if position == 0 or size + path.stat().st_size > part_bytes:
                groups.append([])
                size = 0
            groups[-1].append(path)
            size += path.stat().st_size
    budget = total_bytes - (out / "runs-results.tgz").stat().st_size
    left_out: list[Path] = []
    index = 0
    for files in groups:
        part = out / f"runs-ckpt-{index}.tgz"
        if index < max_parts:
            with tarfile.open(part, "w:gz") as archive:
                for path in files:
                    archive.add(path)
            compressed = part.stat().st_size
            if compressed <= min(budget, file_bytes):
                budget -= compressed
                index += 1
                continue
            part.unlink()
        left_out += files
    if left_out:
        runs_left = sorted({str(path.relative_to(runs).parents[-3]) for path in left_out})
        print(
            f"device_queue: {len(left_out)} checkpoint files did not fit in the returned archives and stay on "
            f"this machine (runs {', '.join(runs_left)})",
            flush=True,
        )


def resume_set(source: Path, destination: Path) -> list[Path]:
    """Copy from ``source`` only the archives a fresh machine needs to resume: results and last checkpoints.

    A call may carry 64 MiB in all, tree and data included; two unfinished PTB runs' archives take 62 MiB,
    of which 17 MiB are best checkpoints that resuming never reads (round 37). Which archives those are is
    read from their members: a ``runs-ckpt-K.tgz`` goes when it holds anything outside ``checkpoints/best/``.
    Returns the copied paths; ``unpack(destination)`` then restores every unfinished run.
    """
    archives = sorted(source.glob("runs-ckpt-*.tgz"))
    if not (source / "runs-results.tgz").is_file():
        raise SystemExit(f"device_queue: no runs-results.tgz in {source}")
    stale = sorted(destination.glob("runs-*.tgz"))
    if stale:  # unpack reads every archive in the folder: an older set's parts would come back with these
        raise SystemExit(f"device_queue: {destination} already holds archives ({stale[0].name}); name an empty folder")
    keep = [source / "runs-results.tgz"]
    for path in archives:
        try:
            with tarfile.open(path) as archive:
                names = [member.name for member in archive.getmembers() if not member.isdir()]
        except (tarfile.TarError, EOFError, OSError) as error:
            raise SystemExit(f"device_queue: cannot read {path}: {error}") from error
        if any("/checkpoints/" in name and "/checkpoints/best/" not in name for name in names):
            keep.append(path)
    destination.mkdir(parents=True, exist_ok=True)
    copied = [Path(shutil.copy2(path, destination / path.name)) for path in keep]
    return copied


def unpack(folder: Path) -> tuple[int, int]:
    """Put the archives that :func:`pack` wrote (``runs-results.tgz``, ``runs-ckpt-K.tgz``) back under ``runs/``.

    For a fresh machine: its runs then resume where the earlier call stopped them. A run directory
    that is already here (a warm machine's, which is at least as new) is kept as it is, and so is
    every other file already here. Only regular files under ``runs/`` are written; any other member
    (a link, an absolute path, ``..``) stops the unpacking with an error naming it.
    Returns the number of files written and of runs kept.
    """
    archives = sorted(folder.glob("runs-results.tgz")) + sorted(folder.glob("runs-ckpt-*.tgz"))
    if not archives:
        raise SystemExit(f"device_queue: no runs-results.tgz or runs-ckpt-*.tgz in {folder}")
    present = {p.parent for p in Path("runs").glob("*/seed*/meta.json")}
    kept: set[Path] = set()
    written = 0
    for path in archives:
        try:
            files, runs = _unpack_one(path, present)
        except (tarfile.TarError, EOFError, OSError) as error:  # truncated or not an archive: say which
            raise SystemExit(f"device_queue: cannot unpack {path}: {error}") from error
        written, kept = written + files, kept | runs
    return written, len(kept)


def _unpack_one(path: Path, present: set[Path]) -> tuple[int, set[Path]]:
    """One archive: the files written, and the runs of ``present`` it held (left as they are)."""
    written, kept = 0, set()
    with tarfile.open(path) as archive:
        members = archive.getmembers()  # reads the whole archive first: a truncated one fails before any write
        for member in members:
            if member.isdir():
                continue
            name = Path(member.name)
            if not member.isfile() or name.is_absolute() or ".." in name.parts or name.parts[:1] != ("runs",):
                raise SystemExit(f"device_queue: {path} holds {member.name!r}, not a file under runs/")
            run_dir = Path(*name.parts[:3])
            if run_dir in present:
                kept.add(run_dir)
                continue
            if name.exists():
                continue
            name.parent.mkdir(parents=True, exist_ok=True)
            partial = name.with_name(name.name + ".unpacking")  # a cut-off file must not pass for a whole one
            with archive.extractfile(member) as source, open(partial, "wb") as target:
                shutil.copyfileobj(source, target)
            partial.replace(name)
            written += 1
    return written, kept


if __name__ == "__main__":
    main()
