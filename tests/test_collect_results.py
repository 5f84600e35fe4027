"""scripts/collect_results.py: which runs' small files reach results/, and where."""

import json

from scripts_loader import load_script

collect_results = load_script("scripts/collect_results.py", "collect_results")


def _run(root, experiment, seed, *, finished, checkpoint=True):
    run = root / experiment / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "config.toml").write_text("[train]\nseed = 0\n")
    (run / "meta.json").write_text(json.dumps({"seed": seed}))
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (run / "train.log").write_text("epoch 1\n")
    if finished:
        (run / "summary.json").write_text(json.dumps({"status": "completed"}))
    if checkpoint:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.safetensors").write_bytes(b"\0" * 64)
    (root / experiment / f"seed{seed}.queue.jsonl").write_text('{"gpu": 0}\n')
    return run


def test_finished_runs_only_by_default(tmp_path, capsys):
    runs, results = tmp_path / "runs", tmp_path / "results"
    _run(runs, "ptb", 0, finished=True)
    _run(runs, "ptb", 2, finished=False)
    collect_results.main(str(runs), str(results))
    copied = results / "ptb" / "seed0"
    assert sorted(p.name for p in copied.iterdir()) == [
        "config.toml", "meta.json", "metrics.jsonl", "queue.jsonl", "summary.json", "train.log",
    ]  # fmt: skip
    assert (copied / "queue.jsonl").read_text() == '{"gpu": 0}\n'
    assert not (results / "ptb" / "seed2").exists()
    assert "1 finished runs copied" in capsys.readouterr().out


def test_unfinished_copies_started_runs_without_checkpoints(tmp_path, capsys):
    runs, results = tmp_path / "runs", tmp_path / "results"
    _run(runs, "ptb", 0, finished=True)
    _run(runs, "ptb", 2, finished=False)
    collect_results.main(str(runs), str(results), unfinished=True)
    partial = results / "ptb" / "seed2"
    assert sorted(p.name for p in partial.iterdir()) == [
        "config.toml", "meta.json", "metrics.jsonl", "queue.jsonl", "train.log",
    ]  # fmt: skip
    assert (results / "ptb" / "seed0" / "summary.json").is_file()
    assert not any(p.name == "checkpoints" for p in results.rglob("*"))
    assert "1 finished runs and 1 unfinished copied" in capsys.readouterr().out


def test_search_trials_go_beside_the_search_records(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    _run(runs, "search-lipschitz_ptb-lr0.001", 0, finished=True)
    (runs / "search-records").mkdir()
    (runs / "search-records" / "lipschitz_ptb.json").write_text("{}")
    collect_results.main(str(runs), str(results))
    assert (results / "search" / "trials" / "search-lipschitz_ptb-lr0.001" / "seed0" / "summary.json").is_file()
    assert (results / "search" / "lipschitz_ptb.json").is_file()
    assert not (results / "search-lipschitz_ptb-lr0.001").exists()
