"""Results across runs: find run directories, group them by experiment, compare with the paper.

The reported test number of a run is the test metric **at its best-validation epoch** (the
``best`` checkpoint); the test metric at the last epoch is reported beside it. Runs without
a validation split report the last epoch in both. Mean ± sample standard deviation over the
seeds of completed runs; diverged and unfinished runs are counted, not averaged.

Example:
    >>> records = summarize([])          # no run directories: no experiments
    >>> records, markdown_table(records).splitlines()[0].startswith("| experiment")
    ([], True)
"""

from __future__ import annotations

import math
import shlex
import statistics
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

from ..analysis.hessian import ritz_value_resolved
from ..paper import PAPER
from .checkpoint import RunDirError, check_run_dir, read_json
from .config import ConfigError, load_config, overrides_between, split_train_items

__all__ = [
    "compare_runs",
    "comparison_table",
    "find_runs",
    "find_searches",
    "load_rows",
    "markdown_table",
    "rows_table",
    "search_table",
    "summarize",
]

#: experiment names of validation-search trials (``scripts/val_search.py``): not rows of the table
SEARCH_PREFIX = "search-"

#: what the tables' command column holds (:func:`_command`)
COMMAND_NOTE = (
    "the first seed's, which trains it again with today's config files: where a file changed after the run, "
    "the overrides that restore the run's settings are appended (summary.json keeps the command as it ran as "
    "command_recorded); other seeds differ in train.seed."
)

#: the keys every record of ``summary.json`` has (more may follow)
RECORD_KEYS = (
    "experiment",
    "task",
    "model",
    "method",
    "hidden_size",
    "params",
    "seeds",
    "metric",
    "test_mean",
    "test_std",
    "paper",
    "data_source",
)


def find_runs(paths: Iterable[Union[str, Path]]) -> tuple[list[Path], list[str]]:
    """Run directories under ``paths`` (recursively), and notes on directories skipped."""
    runs, notes = [], []
    for root in paths:
        root = Path(root)
        if not root.exists():
            notes.append(f"{root}: does not exist")
            continue
        candidates = [root / "meta.json"] if (root / "meta.json").is_file() else sorted(root.rglob("meta.json"))
        for meta_path in candidates:
            try:
                check_run_dir(meta_path.parent)
            except RunDirError as exc:
                notes.append(f"skipped: {exc}")
                continue
            if meta_path.parent not in runs:
                runs.append(meta_path.parent)
    return runs, notes


def _mean_std(values: list[float]) -> tuple[Optional[float], Optional[float]]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _reported_test(summary: dict[str, Any]) -> Optional[float]:
    """The best-validation epoch's test metric; the last epoch's where there is no validation split."""
    best = summary.get("test_best_val")
    return summary.get("test_last") if best is None else best


def _load(run: Path) -> dict[str, Any]:
    meta = read_json(run / "meta.json")
    cfg = load_config(run / "config.toml")
    summary = read_json(run / "summary.json") if (run / "summary.json").is_file() else {"status": "incomplete"}
    return {"dir": run, "meta": meta, "cfg": cfg, "summary": summary}


def summarize(paths: Iterable[Union[str, Path]], notes: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """One record per experiment (keys :data:`RECORD_KEYS` first), sorted by experiment name.

    Directories skipped (not runs of this format) are described in ``notes`` when a list is given.
    """
    runs, skipped = find_runs(paths)
    if notes is not None:
        notes.extend(skipped)
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        loaded = _load(run)
        if loaded["cfg"].experiment.name.startswith(SEARCH_PREFIX):
            continue  # a trial of a validation search: reported by search_table, not as a row
        groups.setdefault(loaded["cfg"].experiment.name, []).append(loaded)

    records = []
    for name in sorted(groups):
        group = groups[name]
        done = [r for r in group if r["summary"].get("status") == "completed"]
        first = (done or group)[0]
        cfg, meta = first["cfg"], first["meta"]
        test_mean, test_std = _mean_std([_reported_test(r["summary"]) for r in done])
        last_mean, last_std = _mean_std([r["summary"].get("test_last") for r in done])
        paper = PAPER.get(cfg.experiment.paper)
        record = {
            "experiment": name,
            "task": cfg.task.name,
            "model": cfg.model.name,
            "method": meta.get("model", {}).get("method"),
            "hidden_size": cfg.model.hidden_size,
            "params": meta.get("model", {}).get("params"),
            "seeds": sorted(r["cfg"].train.seed for r in done),
            "metric": meta.get("data", {}).get("metric"),
            "test_mean": test_mean,
            "test_std": test_std,
            "paper": paper.value if paper else None,
            "data_source": meta.get("data", {}).get("source"),
            "test_reported": "test metric at the best-validation epoch (last epoch where there is no validation split)",
            "test_last_mean": last_mean,
            "test_last_std": last_std,
            "n_runs": len(group),
            "n_completed": len(done),
            "n_diverged": sum(r["summary"].get("status") == "diverged" for r in group),
            "n_incomplete": sum(r["summary"].get("status") == "incomplete" for r in group),
            "epochs": [r["summary"].get("epochs") for r in done],
            "time_per_epoch_s": _mean_std([r["summary"].get("time_per_epoch_s") for r in done])[0],
            "diff_vs_paper": None if (paper is None or test_mean is None) else round(test_mean - paper.value, 4),
            "train_time_total_s": sum(r["summary"].get("total_time_s") or 0.0 for r in done) or None,
            "devices": sorted({str(r["meta"].get("device_name") or r["meta"].get("device")) for r in done}),
            "command": _command(first),
            "command_recorded": " ".join(_recorded_command(first["meta"]) or []) or None,
            "paper_key": cfg.experiment.paper or None,
            "paper_source": paper.source if paper else None,
            "paper_note": paper.note if paper else None,
            "run_dirs": [str(r["dir"]) for r in group],
        }
        warnings = []
        if len({(r["cfg"].task.name, r["meta"].get("model", {}).get("params")) for r in group}) > 1:
            warnings.append("runs of this experiment differ in task or parameter count")
        repeated = sorted({seed for seed in record["seeds"] if record["seeds"].count(seed) > 1})
        if repeated:  # e.g. a re-run reported together with the committed runs: both count in the mean
            warnings.append(f"completed runs repeat seed(s) {repeated}; each counts in the mean")
        if warnings:
            record["warning"] = "; ".join(warnings)
        records.append(record)
    return records


def _recorded_command(meta: dict[str, Any]) -> Optional[list[str]]:
    """The run's ``lipschitz-rnn train`` command as it ran, without its output folder and progress switch."""
    words = list(meta.get("command") or [])
    if not words:
        return None
    if "--out" in words:
        at = words.index("--out")
        del words[at : at + 2]
    return [w for w in words if w != "log.progress=false"]


def _command(run: dict[str, Any]) -> Optional[str]:
    """A command that trains the run again with today's config files.

    The recorded command, where its config file still resolves to the run's recorded config. Where
    the file has changed since (a later search moved a default), the overrides that restore the run's
    settings are appended; where no override can (an option was removed, the file no longer loads),
    the command trains from the run's own resolved ``config.toml``. A file that is not found from
    here (a report made outside the repository) leaves the recorded command as it is.
    """
    words = _recorded_command(run["meta"])
    if words is None or "train" not in words:
        return None if words is None else " ".join(words)
    at = words.index("train") + 1
    configs, overrides = split_train_items(words[at:])
    configs = [item for item in configs if not item.startswith("-")]  # a flag's value (--device cuda) stays
    if len(configs) != 1 or not Path(configs[0]).is_file():
        return " ".join(words)
    try:
        extra = overrides_between(load_config(configs[0], overrides), run["cfg"])
    except ConfigError:
        extra = None
    if extra is None:
        return " ".join([*words[:at], str(run["dir"] / "config.toml")])
    return " ".join(words + [shlex.quote(item) for item in extra])


# -- a re-run beside the run it repeats (``--against``) ------------------------------------------------


def compare_runs(
    paths: Iterable[Union[str, Path]], reference: Iterable[Union[str, Path]], notes: Optional[list[str]] = None
) -> list[dict[str, Any]]:
    """Each run under ``paths`` beside the run of the same experiment and seed under ``reference``.

    One record per run, sorted by experiment and seed: its reported test metric (best-validation
    epoch) and best validation, the reference run's, their difference, the paper's number, and
    ``settings_differ``, the overrides that turn the reference run's config into this one's (its
    ``[log]`` aside; ``None`` where overrides cannot say it). A run without a counterpart has
    ``reference_dir`` None.

    Example:
        >>> compare_runs([], [])
        []
    """
    runs, skipped = find_runs(paths)
    references, skipped_references = find_runs(reference)
    if notes is not None:
        notes.extend(skipped + skipped_references)
    by_key: dict[tuple[str, int], dict[str, Any]] = {}
    for path in references:
        loaded = _load(path)
        key = (loaded["cfg"].experiment.name, loaded["cfg"].train.seed)
        done = loaded["summary"].get("status") == "completed"
        if key not in by_key or (done and by_key[key]["summary"].get("status") != "completed"):
            by_key[key] = loaded  # a completed run stands for its experiment and seed
    records = []
    for path in runs:
        run = _load(path)
        cfg, summary = run["cfg"], run["summary"]
        ref = by_key.get((cfg.experiment.name, cfg.train.seed))
        ref_summary = ref["summary"] if ref else {}
        test, ref_test = _reported_test(summary), _reported_test(ref_summary)
        paper = PAPER.get(cfg.experiment.paper)
        records.append(
            {
                "experiment": cfg.experiment.name,
                "seed": cfg.train.seed,
                "metric": run["meta"].get("data", {}).get("metric"),
                "run_dir": str(path),
                "status": summary.get("status"),
                "test": test,
                "val_best": summary.get("val_best"),
                "epochs": summary.get("epochs"),
                "reference_dir": str(ref["dir"]) if ref else None,
                "reference_status": ref_summary.get("status") if ref else None,
                "reference_test": ref_test,
                "reference_val_best": ref_summary.get("val_best"),
                "reference_epochs": ref_summary.get("epochs"),
                "diff": None if test is None or ref_test is None else round(test - ref_test, 6),
                "paper": paper.value if paper else None,
                "settings_differ": overrides_between(ref["cfg"], cfg) if ref else None,
                "device": run["meta"].get("device_name") or run["meta"].get("device"),
                "reference_device": (ref["meta"].get("device_name") or ref["meta"].get("device")) if ref else None,
            }
        )
    return sorted(records, key=lambda r: (r["experiment"], r["seed"], r["run_dir"]))


def comparison_table(records: list[dict[str, Any]]) -> str:
    """The records of :func:`compare_runs` as a Markdown table."""
    header = (
        "| experiment | seed | metric | test (this run) | test (reference) | Δ | best val (this run) "
        "| best val (reference) | epochs (this / reference) | paper | device (this / reference) "
        "| settings that differ |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in records:
        metric = r["metric"]
        if r["reference_dir"] is None:
            settings = "no reference run"
        elif r["settings_differ"] is None:
            settings = "options differ (compare the two config.toml)"
        else:
            settings = " ".join(f"`{item}`" for item in r["settings_differ"]) or "none"
        test = _fmt(r["test"], None, metric) if r["status"] == "completed" else (r["status"] or "n/a")
        ref_test = _fmt(r["reference_test"], None, metric)
        if r["reference_dir"] is not None and r["reference_status"] != "completed":
            ref_test = r["reference_status"] or "n/a"
        diff = "—" if r["diff"] is None else f"{r['diff']:+.{2 if metric == 'accuracy' else 4}f}"
        epochs = " / ".join("n/a" if e is None else str(e) for e in (r["epochs"], r["reference_epochs"]))
        devices = " / ".join(d or "n/a" for d in (r["device"], r["reference_device"]))
        lines.append(
            f"| {r['experiment']} | {r['seed']} | {metric} | {test} | {ref_test} | {diff} "
            f"| {_fmt(r['val_best'], None, metric)} | {_fmt(r['reference_val_best'], None, metric)} "
            f"| {epochs} | {r['paper'] if r['paper'] is not None else '—'} | {devices} | {settings} |"
        )
    lines.append("")
    lines.append(
        "Each run beside the reference run of the same experiment and seed. test: at the best-validation "
        "epoch; Δ: this run minus the reference. settings that differ: the overrides that turn the reference "
        "run's config into this run's ([log] aside). Another GPU, torch version or backend changes the "
        "floating-point order of operations, so a re-run matches its reference closely, not bit for bit."
    )
    return "\n".join(lines) + "\n"


def _fmt(value: Optional[float], std: Optional[float], metric: Optional[str]) -> str:
    if value is None:
        return "n/a"
    digits = 2 if metric == "accuracy" else 4
    text = f"{value:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if std is not None else "")


def _cells(r: dict[str, Any]) -> dict[str, str]:
    """A record's table cells that both tables show, formatted once."""
    flags = []
    if r["n_diverged"]:
        flags.append(f"{r['n_diverged']} diverged")
    if r["n_incomplete"]:
        flags.append(f"{r['n_incomplete']} unfinished")
    return {
        "test": _fmt(r["test_mean"], r["test_std"], r["metric"]),
        "seeds": f"{len(r['seeds'])}" + (f" ({', '.join(flags)})" if flags else ""),
        "paper": "—" if r["paper"] is None else f"{r['paper']}" + ("*" if r.get("paper_note") else ""),
        "diff": "—" if r["diff_vs_paper"] is None else f"{r['diff_vs_paper']:+.2f}",
        "params": f"{r['params'] or 'n/a'}",
        "data": r["data_source"] or "n/a",
        "epochs": ", ".join(map(str, sorted({e for e in r["epochs"] if e is not None}))) or "n/a",
        "s_epoch": "n/a" if r["time_per_epoch_s"] is None else format(r["time_per_epoch_s"], ".1f"),
        "train_min": "n/a" if not r["train_time_total_s"] else format(r["train_time_total_s"] / 60, ".1f"),
        "command": "`" + r["command"] + "`" if r["command"] else "n/a",
    }


def markdown_table(records: list[dict[str, Any]]) -> str:
    """The records as a Markdown table beside the paper's numbers."""
    header = (
        "| experiment | task | model | N | params | metric | test (best val) | test (last epoch) | seeds "
        "| paper | Δ | data source | epochs | s/epoch | train min (all seeds) | device | command |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in records:
        c = _cells(r)
        unit = " (%)" if r["metric"] == "accuracy" else ""
        model = r["model"] + (f" ({r['method']})" if r.get("method") else "")
        lines.append(
            f"| {r['experiment']} | {r['task']} | {model} | {r['hidden_size']} | {c['params']} "
            f"| {r['metric']}{unit} | {c['test']} | {_fmt(r['test_last_mean'], r['test_last_std'], r['metric'])} "
            f"| {c['seeds']} | {c['paper']} | {c['diff']} | {c['data']} | {c['epochs']} | {c['s_epoch']} "
            f"| {c['train_min']} | {', '.join(r['devices']) or 'n/a'} | {c['command']} |"
        )
    lines.append("")
    lines.append(
        "test (best val): test metric of the best-validation checkpoint (a run without a validation split: "
        "the last epoch's); test (last epoch): at the end of training. "
        "Mean ± sample std over seeds of completed runs. * paper number whose row or N is unverified. "
        "Δ: test (best val) minus paper. s/epoch and train min: wall time of training and per-epoch "
        "evaluation as the runs logged it (runs that shared a GPU ran slower than alone). "
        f"command: {COMMAND_NOTE}"
    )
    return "\n".join(lines) + "\n"


# -- the rows of a results table (``--rows``): which experiment stands for each ----------------------


def load_rows(path: Union[str, Path]) -> list[dict[str, str]]:
    """``[{"label", "experiment"}, ...]`` from a TOML file of ``[[row]]`` tables, in file order.

    A row is a line of the table being reproduced (a paper's, an issue's); its ``experiment`` is the
    one whose runs stand for it (the searches and ablations beside it are not rows)::

        [[row]]
        label = "sMNIST, N = 128, Lipschitz Euler"
        experiment = "smnist_lipschitz_euler_n128"
    """
    from .config import tomllib

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read the rows file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"rows file {path} is not valid TOML: {exc}") from exc
    rows = raw.get("row")
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"rows file {path} has no [[row]] tables")
    out: list[dict[str, str]] = []
    seen: dict[str, set[str]] = {"label": set(), "experiment": set()}
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ValueError(f"rows file {path}: row {i} must be a table ([[row]]), got {row!r}")
        if set(row) != {"label", "experiment"} or not all(isinstance(v, str) and v for v in row.values()):
            raise ValueError(
                f"rows file {path}: row {i} must have exactly a non-empty 'label' and 'experiment', got {row}"
            )
        for key in ("label", "experiment"):  # one experiment stands for one row: summary.json has one label each
            if row[key] in seen[key]:
                raise ValueError(f"rows file {path}: row {i} repeats the {key} {row[key]!r}")
            seen[key].add(row[key])
        out.append({"label": row["label"], "experiment": row["experiment"]})
    return out


def rows_table(records: list[dict[str, Any]], rows: list[dict[str, str]]) -> str:
    """One line per row, in the rows' order, with its experiment's numbers; a row without runs says so."""
    by_name = {r["experiment"]: r for r in records}
    header = (
        "| row | experiment | test (best val) | seeds | paper | Δ | params | epochs | s/epoch "
        "| train min (all seeds) | data source | command |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        r = by_name.get(row["experiment"])
        if r is None:
            lines.append(f"| {row['label']} | {row['experiment']} | no runs |" + " |" * 9)
            continue
        c = _cells(r)
        unit = " %" if r["metric"] == "accuracy" else f" {r['metric']}"
        lines.append(
            f"| {row['label']} | {r['experiment']} | {c['test']}{unit} | {c['seeds']} | {c['paper']} | {c['diff']} "
            f"| {c['params']} | {c['epochs']} | {c['s_epoch']} | {c['train_min']} | {c['data']} | {c['command']} |"
        )
    lines.append("")
    lines.append(
        "One experiment per row of the table being reproduced, chosen in the rows file; its numbers are those of "
        "the full table. Mean ± sample std over seeds at the best-validation epoch. * paper number whose row or N "
        f"is unverified. command: {COMMAND_NOTE}"
    )
    return "\n".join(lines) + "\n"


# -- the robustness table (``lipschitz-rnn analyze`` results) --------------------------------------

TABLE_BEGIN = "<!-- begin: {name} (written by lipschitz-rnn report; edit outside these lines) -->"
TABLE_END = "<!-- end: {name} -->"


def _json_objects(paths: Iterable[Union[str, Path]]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """``(path, object)`` of every readable JSON object under the folders ``paths``, in path order."""
    for root in map(Path, paths):
        for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
            try:
                value = read_json(path)
            except (OSError, ValueError):
                continue
            if isinstance(value, dict):
                yield path, value


def find_analyses(paths: Iterable[Union[str, Path]]) -> dict[str, dict[str, Any]]:
    """``{label: merged result}`` of every analysis JSON under ``paths`` (parts run separately are merged)."""
    merged: dict[str, dict[str, Any]] = {}
    for path, result in _json_objects(paths):
        run = result.get("run")
        if not isinstance(run, dict) or not ({"hessian", "input_hessian", "perturbation"} & set(result)):
            continue
        label = f"{run.get('experiment')}-seed{run.get('seed')}"
        entry = merged.setdefault(label, {"run": run, "files": []})
        entry["files"].append(str(path))
        for part in ("hessian", "input_hessian", "perturbation", "settings"):
            if part in result:
                entry.setdefault(part, result[part])
    return dict(sorted(merged.items()))


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _lambda_min_and_condition(hessian: dict[str, Any]) -> tuple[str, str, bool]:
    """λ_min and cond. as table cells, and whether λ_min is resolved; ``≤ θ†`` and ``—†`` where
    Lanczos left it unresolved (:func:`~lipschitz_rnn.analysis.ritz_value_resolved`)."""
    lam_min = hessian.get("lambda_min")
    residuals = (hessian.get("smallest") or {}).get("residuals") or []
    if lam_min is not None and residuals and not ritz_value_resolved(lam_min, residuals[0]):
        return f"≤ {_num(lam_min)}†", "—†", False
    return _num(lam_min), _num(hessian.get("condition_number")), True


def robustness_table(analyses: dict[str, dict[str, Any]]) -> str:
    """Curvature and accuracy under noise, one row per analysed run (empty string if none)."""
    if not analyses:
        return ""
    kinds: dict[str, list[float]] = {}
    for entry in analyses.values():
        for kind, curve in (entry.get("perturbation") or {}).get("curves", {}).items():
            kinds.setdefault(kind, [level for level in curve["levels"] if level])
    header = (
        "| run | checkpoint epoch | clean acc. | λ_max(H) | λ_min(H) | cond. | trace(H) ± s.e. | input-H λ_max (mean) |"
    )
    for kind, levels in kinds.items():
        header += "".join(f" {kind} {level:g} |" for level in levels)
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    unresolved = False
    for label, entry in analyses.items():
        hessian, inputs = entry.get("hessian") or {}, entry.get("input_hessian") or {}
        trace = hessian.get("trace") or {}
        perturbation = entry.get("perturbation") or {}
        clean = perturbation.get("clean")
        clean_text = "n/a" if clean is None else format(100 * clean, ".2f")
        lam_min, condition, resolved = _lambda_min_and_condition(hessian)
        unresolved = unresolved or not resolved
        row = (
            f"| {label} | {entry['run'].get('epoch', 'n/a')} | {clean_text} "
            f"| {_num(hessian.get('lambda_max'))} | {lam_min} | {condition} "
            f"| {_num(trace.get('estimate'))} ± {_num(trace.get('stderr'), 2)} "
            f"| {_num((inputs.get('lambda_max') or {}).get('mean'))} |"
        )
        for kind, levels in kinds.items():
            curve = perturbation.get("curves", {}).get(kind)
            for level in levels:
                if curve is None or level not in curve["levels"]:
                    row += " n/a |"
                    continue
                at = curve["levels"].index(level)
                row += f" {100 * curve['mean'][at]:.1f} ± {100 * curve['std'][at]:.1f} |"
        lines.append(row)
    lines.append("")
    lines.append(
        "Hessian of the mean training loss w.r.t. all parameters (see each JSON's settings and definitions); "
        "cond. = max(|λ_max|, |λ_min|) / min(|λ_max|, |λ_min|) (lipschitz_rnn.analysis); "
        "accuracies in % as mean ± std over noise draws, at each noise level (columns: kind and level)."
    )
    if unresolved:
        lines.append(
            "† λ_min not resolved: Lanczos stopped at residuals <= tol · ‖H‖, and the smallest Ritz value's "
            "residual exceeds its size; it is only an upper bound on λ_min, and cond. is not determined."
        )
    return "\n".join(lines) + "\n"


# -- the validation searches (``scripts/val_search.py select`` records) ----------------------------


def find_searches(paths: Iterable[Union[str, Path]]) -> dict[str, dict[str, Any]]:
    """``{search name: record}`` of every search record (JSON with ``search``, ``trials``, ``chosen``)."""
    found = {
        record["search"]["name"]: record
        for _, record in _json_objects(paths)
        if {"search", "trials", "chosen"} <= set(record)
    }
    return dict(sorted(found.items()))


def search_table(searches: dict[str, dict[str, Any]]) -> str:
    """One row per trial: its settings, best validation metric and epoch; the chosen trial in bold."""
    if not searches:
        return ""
    lines = [
        "| search | base config | every trial | trial | val metric (best) | at epoch | s/epoch | chosen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, record in searches.items():
        search, chosen = record["search"], record["chosen"]["name"]
        shared = " ".join(search.get("overrides", [])) or "—"
        for trial in record["trials"]:
            value = trial.get("val_best")
            metric = trial.get("metric", "")
            shown = "diverged" if trial.get("status") == "diverged" else f"{value:.4g} {metric}"
            settings = " ".join(trial["overrides"])
            mark = "**yes**" if trial["name"] == chosen else ""
            per_epoch = trial.get("time_per_epoch_s")
            lines.append(
                f"| {name} | `{search['base']}` | `{shared}` | `{settings}` | {shown} "
                f"| {trial.get('best_epoch', '—') if value is not None else '—'} "
                f"| {'—' if per_epoch is None else format(per_epoch, '.1f')} | {mark} |"
            )
        for missing in record.get("missing", []):
            lines.append(f"| {name} | `{search['base']}` | `{shared}` | {missing} | not finished | — | — | |")
    lines.append("")
    lines.append(
        "Trials ranked by their best validation metric only (test numbers are not read); "
        "each search's spec is configs/searches/<search>.toml and its record results/search/<search>.json."
    )
    return "\n".join(lines) + "\n"


def update_markdown(path: Union[str, Path], tables: dict[str, str]) -> str:
    """The text of ``path`` with each named table replaced between its markers.

    A file without the markers (or no file) gets the tables appended, each between markers,
    so the prose around them survives later runs of ``lipschitz-rnn report``.
    """
    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    for name, table in tables.items():
        if not table:
            continue
        begin, end = TABLE_BEGIN.format(name=name), TABLE_END.format(name=name)
        block = f"{begin}\n{table}{end}"
        counts = (text.count(begin), text.count(end))
        if counts == (1, 1) and text.index(begin) < text.index(end):
            head, rest = text.split(begin, 1)
            text = head + block + rest.split(end, 1)[1]
        elif counts == (0, 0):
            text = (text.rstrip("\n") + "\n\n" if text else "") + block + "\n"
        else:  # a lone, repeated or misordered marker: replacing would guess where the table ends, and lose prose
            raise ValueError(
                f"{path}: the markers of table {name!r} must appear once each, begin before end (found {counts[0]} "
                f"'{begin}' and {counts[1]} '{end}'); mend them by hand"
            )
    return text
