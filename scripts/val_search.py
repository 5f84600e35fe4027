"""A small grid search on the validation split, for the settings the paper does not give.

    python scripts/val_search.py jobs configs/search/antisymmetric_smnist.toml > search.txt
    python scripts/device_queue.py @search.txt                 # the trials, on every GPU
    python scripts/val_search.py select configs/search/antisymmetric_smnist.toml \\
        --runs runs --record results/search > final.txt         # the choice, and the final jobs
    python scripts/device_queue.py @final.txt

A spec (``configs/searches/*.toml``) names a base config, the overrides every trial shares (a
short budget, ``train.epochs``), a ``[grid]`` of ``"key" = [values]`` and the configs the
choice is ``[apply]``-ed to (``skip_unchanged = true``: not those that already hold the
chosen values, whose committed rows are then the final runs). Every combination of the grid is one trial, a run named
``search-<spec>-<key><value>-...`` (``collect_results.py`` files them under ``results/search/trials``,
and ``lipschitz-rnn report`` lists them in its searches table, not as rows).

``select`` ranks the trials by their best **validation** metric (test numbers are not read),
in the direction the run's summary gives (accuracy up, bits per character down); ties go to
the earlier trial in grid order. It writes ``<record>/<spec>.json`` with every trial's
overrides, validation curve and timing and the choice, and prints one device-queue job per
``apply`` config: that config with the chosen values as overrides. A missing or unfinished
trial is an error unless ``--partial`` is given, which then ranks the finished ones and says so.

A short trial can choose wrongly at full length (it did twice: the pixel-CIFAR rate and the plain
AntisymmetricRNN rate), so a spec with ``[apply] variant = "..."`` runs its final jobs under
``<row>_<variant>`` and leaves the rows alone. Then

    python scripts/val_search.py confirm configs/searches/a.toml configs/searches/b.toml \
        --runs results --record results/search

compares, per ``apply`` config, the full-length best validation (mean over the apply seeds) of the
committed row and of every given spec's variant run, and writes the verdict into each spec's record
(``confirmed``): the row stands unless a variant beats it (ties keep the row). A spec with
``skip_unchanged`` whose choice is the row's own setting has no variant run; the row stands for it.
A config adopts a choice only by being edited to hold it (and its row re-run);
``tests/test_val_search.py`` checks that the committed configs agree with the committed verdicts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from lipschitz_rnn.train.metrics import read_metrics
from lipschitz_rnn.train.report import SEARCH_PREFIX

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def load_spec(path: str) -> dict:
    with open(path, "rb") as handle:
        spec = tomllib.load(handle)
    for section in ("search", "grid", "apply"):
        if section not in spec:
            sys.exit(f"val_search: {path} has no [{section}] section")
    search = spec["search"]
    for key in ("name", "base"):
        if key not in search:
            sys.exit(f"val_search: {path}: [search] needs {key!r}")
    if not Path(search["base"]).is_file():
        sys.exit(f"val_search: {path}: base config {search['base']!r} does not exist")
    for key, values in spec["grid"].items():
        if not isinstance(values, list) or not values:
            sys.exit(f"val_search: {path}: grid entry {key!r} must be a non-empty list")
        if any("," in str(v) or ":" in str(v) for v in values):
            sys.exit(f"val_search: {path}: grid values of {key!r} may not contain ',' or ':' (job syntax)")
    for config in spec["apply"].get("configs", []):
        if not Path(config).is_file():
            sys.exit(f"val_search: {path}: apply config {config!r} does not exist")
    variant = spec["apply"].get("variant")
    if variant is not None and not (isinstance(variant, str) and variant.replace("_", "").isalnum()):
        sys.exit(f"val_search: {path}: [apply] variant must be letters, digits and '_' (got {variant!r})")
    return spec


def trials(spec: dict) -> list[dict]:
    """Every grid combination, in grid order: ``{"name", "overrides"}``."""
    keys = list(spec["grid"])
    out = []
    for values in itertools.product(*(spec["grid"][k] for k in keys)):
        label = "-".join(f"{k.rsplit('.', 1)[-1]}{v}" for k, v in zip(keys, values))
        overrides = [f"{k}={v}" for k, v in zip(keys, values)]
        out.append({"name": f"{SEARCH_PREFIX}{spec['search']['name']}-{label}", "overrides": overrides})
    return out


def trial_jobs(spec: dict) -> list[str]:
    search = spec["search"]
    shared = list(search.get("overrides", []))
    seed = int(search.get("seed", 0))
    return [
        f"{search['base']}:{seed}:{','.join([*shared, *t['overrides'], 'experiment.name=' + t['name']])}"
        for t in trials(spec)
    ]


def _read_trial(run_dir: Path) -> dict | None:
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    if summary.get("status") == "diverged":  # ranked last: a setting that diverges is not chosen
        return {"status": "diverged", "val_best": None, "message": summary.get("message")}
    curve = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for record in read_metrics(metrics):
            if isinstance(record.get("val"), dict) and summary["metric"] in record["val"]:
                curve.append(record["val"][summary["metric"]])
    return {
        "status": summary.get("status", "completed"),
        "val_best": summary["val_best"],
        "best_epoch": summary["best_epoch"],
        "epochs": summary["epochs"],
        "metric": summary["metric"],
        "higher_is_better": summary["higher_is_better"],
        "time_per_epoch_s": summary.get("time_per_epoch_s"),
        "val_curve": curve,
    }


def select(spec: dict, runs: Path, partial: bool = False) -> dict:
    """The record of a finished search: every trial and the chosen one (best validation metric)."""
    seed = int(spec["search"].get("seed", 0))
    results, missing = [], []
    for trial in trials(spec):
        found = _read_trial(runs / trial["name"] / f"seed{seed}")
        if found is None:
            missing.append(trial["name"])
        else:
            results.append({**trial, **found})
    if missing and not partial:
        sys.exit(f"val_search: unfinished trials (use --partial to rank the rest): {', '.join(missing)}")
    if not results:
        sys.exit(f"val_search: no finished trial of {spec['search']['name']!r} under {runs}")
    ranked = [r for r in results if r["val_best"] is not None]
    if not ranked:
        sys.exit(f"val_search: every finished trial of {spec['search']['name']!r} diverged")
    higher = ranked[0]["higher_is_better"]
    best = max(ranked, key=lambda r: r["val_best"]) if higher else min(ranked, key=lambda r: r["val_best"])
    return {
        "search": spec["search"],
        "grid": spec["grid"],
        "apply": spec["apply"],
        "selected_by": f"best validation {ranked[0]['metric']} ({'higher' if higher else 'lower'} is better); "
        "test metrics are not read",
        "trials": results,
        "missing": missing,
        "chosen": {"name": best["name"], "overrides": best["overrides"], "val_best": best["val_best"]},
    }


def holds(config: str, overrides: list[str]) -> bool:
    """Whether ``config`` already has every ``section.key=value`` of ``overrides`` (same values, parsed)."""
    from lipschitz_rnn.train.config import load_config, parse_overrides

    cfg = load_config(config)
    for section, key, value in parse_overrides(overrides):
        part = getattr(cfg, section)
        current = getattr(part, key) if hasattr(part, key) else getattr(part, "options", {}).get(key)
        if current != value:
            return False
    return True


def row_name(config: str) -> str:
    """The run name of the row a config trains (its ``experiment.name``)."""
    from lipschitz_rnn.train.config import load_config

    return load_config(config).experiment.name


def variant_name(row: str, variant: str) -> str:
    """The final run of a choice with ``[apply] variant``: the row's name with ``_<variant>``."""
    return f"{row}_{variant}"


def final_jobs(record: dict) -> list[str]:
    """One device-queue job per ``apply`` config. With ``skip_unchanged = true`` a config that already
    holds the chosen values gets a comment instead: its committed row is the final run of the choice.

    With ``variant`` the final run is named ``<row>_<variant>`` and the row stays as committed until
    ``confirm`` has compared the two at full length; without it (the searches before round 14) the final
    run is the row itself."""
    apply = record["apply"]
    seeds = ",".join(str(s) for s in apply.get("seeds", [0]))
    chosen = record["chosen"]["overrides"]
    jobs = []
    for config in apply.get("configs", []):
        if apply.get("skip_unchanged", False) and holds(config, chosen):
            jobs.append(f"# {config} already holds {' '.join(chosen)}: its committed row stands")
            continue
        overrides = list(chosen)
        if apply.get("variant"):
            overrides.append(f"experiment.name={variant_name(row_name(config), apply['variant'])}")
        jobs.append(f"{config}:{seeds}:{','.join(overrides)}")
    return jobs


def _mean_val_best(runs: Path, name: str, seeds: list[int]) -> tuple[float | None, bool, list[str]]:
    """Mean best validation metric of ``name`` over ``seeds`` (None if a seed diverged), the
    direction, and the seeds' summaries that are missing or unfinished."""
    values, missing, higher = [], [], True
    for seed in seeds:
        summary_path = runs / name / f"seed{seed}" / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        if summary is None or summary.get("status") not in ("completed", "diverged"):
            missing.append(f"{name}/seed{seed}")
            continue
        higher = summary.get("higher_is_better", True)
        values.append(summary["val_best"] if summary.get("status") == "completed" else None)
    if missing or None in values:
        return None, higher, missing
    return sum(values) / len(values), higher, missing


def _better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def confirm(specs: list[dict], runs: Path, chosen: dict[str, list[str]] | None = None) -> dict[str, dict]:
    """Per ``apply`` config of the variant specs: the row and every variant at full length, and the verdict.

    ``chosen`` maps a spec's name to its choice's overrides (from its record). A spec with
    ``skip_unchanged = true`` whose choice a config already holds ran no final run for it: its
    candidate there is the row itself (``"is_row": true``), and the row stands for it."""
    chosen = chosen or {}
    configs: dict[str, list[dict]] = {}
    for spec in specs:
        if not spec["apply"].get("variant"):
            sys.exit(f"val_search: {spec['search']['name']!r} has no [apply] variant: its final runs are the rows")
        for config in spec["apply"].get("configs", []):
            configs.setdefault(config, []).append(spec)
    verdicts = {}
    for config, config_specs in configs.items():
        row = row_name(config)
        seeds = [int(s) for s in config_specs[0]["apply"].get("seeds", [0])]
        row_val, higher, missing = _mean_val_best(runs, row, seeds)
        if missing or row_val is None:
            sys.exit(f"val_search: the row of {config} has no finished full-length run under {runs}: {missing or row}")
        candidates = []
        for spec in config_specs:
            choice = chosen.get(spec["search"]["name"])
            if spec["apply"].get("skip_unchanged", False) and choice is not None and holds(config, choice):
                candidates.append({"search": spec["search"]["name"], "name": row, "val_best": row_val, "is_row": True})
                continue
            name = variant_name(row, spec["apply"]["variant"])
            val, _, missing = _mean_val_best(runs, name, seeds)
            if missing:
                sys.exit(f"val_search: unfinished final runs of {spec['search']['name']!r}: {', '.join(missing)}")
            candidates.append({"search": spec["search"]["name"], "name": name, "val_best": val})
        winner = None
        for candidate in candidates:  # strictly better than the row and than the earlier variants
            if candidate["val_best"] is not None and _better(candidate["val_best"], row_val, higher):
                if winner is None or _better(candidate["val_best"], winner["val_best"], higher):
                    winner = candidate
        verdicts[config] = {
            "row": {"name": row, "val_best": row_val},
            "variants": candidates,
            "seeds": seeds,
            "adopt": winner["search"] if winner else None,
            "compared_by": "mean best validation over the seeds at full length; ties keep the row; test is not read",
        }
    return verdicts


def _confirm_lines(verdicts: dict[str, dict]) -> list[str]:
    lines = []
    for config, verdict in verdicts.items():
        row = verdict["row"]
        others = ", ".join(
            f"{v['search']} chose the row's own setting" if v.get("is_row") else f"{v['name']} {v['val_best']}"
            for v in verdict["variants"]
        )
        if verdict["adopt"] is None:
            lines.append(f"{config}: the row {row['name']} stands (val {row['val_best']}; {others})")
        else:
            winner = next(v for v in verdict["variants"] if v["search"] == verdict["adopt"])
            lines.append(
                f"{config}: adopt the choice of {verdict['adopt']}: {winner['name']} val {winner['val_best']} against "
                f"the row's {row['val_best']} ({others}); edit the config to hold it and re-run the row"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    jobs_parser = sub.add_parser("jobs", help="print the trials as device-queue jobs")
    jobs_parser.add_argument("specs", nargs="+")
    select_parser = sub.add_parser("select", help="record the choice and print the final jobs")
    select_parser.add_argument("specs", nargs="+")
    select_parser.add_argument("--runs", default="runs")
    select_parser.add_argument("--record", default="results/search", help="folder for <spec>.json")
    select_parser.add_argument("--partial", action="store_true", help="rank the finished trials if some are missing")
    confirm_parser = sub.add_parser("confirm", help="compare the variant final runs with the rows at full length")
    confirm_parser.add_argument("specs", nargs="+")
    confirm_parser.add_argument("--runs", default="results", help="folder with the rows' and the variants' runs")
    confirm_parser.add_argument("--record", default="results/search", help="folder of the specs' <spec>.json")
    args = parser.parse_args(argv)
    if args.command == "confirm":
        specs = [load_spec(path) for path in args.specs]
        records = {}
        for spec in specs:
            path = Path(args.record) / f"{spec['search']['name']}.json"
            if not path.is_file():
                sys.exit(f"val_search: {path} does not exist: run `select` first")
            records[spec["search"]["name"]] = (path, json.loads(path.read_text()))
        chosen = {name: record["chosen"]["overrides"] for name, (_, record) in records.items()}
        verdicts = confirm(specs, Path(args.runs), chosen)
        for spec in specs:
            path, record = records[spec["search"]["name"]]
            record["confirmed"] = {c: v for c, v in verdicts.items() if c in spec["apply"].get("configs", [])}
            path.write_text(json.dumps(record, indent=2) + "\n")
        print("\n".join(_confirm_lines(verdicts)))
        return
    for path in args.specs:
        spec = load_spec(path)
        if args.command == "jobs":
            print("\n".join(trial_jobs(spec)))
            continue
        record = select(spec, Path(args.runs), partial=args.partial)
        record["spec"] = path
        out = Path(args.record)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{spec['search']['name']}.json").write_text(json.dumps(record, indent=2) + "\n")
        chosen = record["chosen"]
        note = f" ({len(record['missing'])} trials missing)" if record["missing"] else ""
        print(f"# {spec['search']['name']}: chose {' '.join(chosen['overrides'])} (val {chosen['val_best']}){note}")
        print("\n".join(final_jobs(record)))


if __name__ == "__main__":
    main()
