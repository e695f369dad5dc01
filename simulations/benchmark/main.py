"""The benchmark's command line: ``python -m simulations.benchmark [--config FILE] [--tiny]``."""

from __future__ import annotations

import argparse
import json
import os
import platform as py_platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from coopt_flower.byol import BYOL_RECIPES
from coopt_flower.data import open_source, select_samples
from simulations.benchmark.combine import COMBINABLE_KEYS, combine_results, results_config
from simulations.benchmark.config import (BYOL, BYOL_CONVERGED, BYOL_LONG, DEFAULT_CONFIG, JSON_NAME, MD_NAME, PLOT_NAME, RANDOM, SINGLE,
                                          RESULTS_DIR, TINY_CONFIG, Config, load_config)
from simulations.benchmark.datasets import build_datasets
from simulations.benchmark.features import cached_features, log, slug
from simulations.benchmark.plots import plot
from simulations.benchmark.report import render_markdown
from simulations.benchmark.rows import Plateau, ProbeSet, train_row
from simulations.benchmark.summary import summarize
from simulations.benchmark.validation import check_disjoint, validation_ids
from simulations.study_args import add_key_overrides, reproducing_command

# Options that override one key of the config file (flag name = key with dashes).
OVERRIDES = ("num_train", "num_test", "epochs", "proto_image_size", "target_dim", "shared_size",
             "image_size", "batch_size", "arch", "arch2", "probe_epochs", "full_probe_steps",
             "threads", "byol_long_epochs", "device", "single_rows", "extra_merges", "byol_recipe", "lr")


# Config keys that do not change a stored training run (see ``run``); runs that differ only
# in these also combine into one report (``--add-results``).
RUN_KEY_IGNORES = COMBINABLE_KEYS

# Config keys that change only the BYOL rows' training runs.
BYOL_ONLY_KEYS = ("byol_recipe", "byol_views")


def _bool(text: str) -> bool:
    if text.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if text.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_args(argv=None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(description="CoOpt vs BYOL benchmark on Fashion-MNIST.")
    p.add_argument("--config", default=None,
                   help=f"YAML file with the benchmark's keys (default {DEFAULT_CONFIG.name} in "
                        f"{DEFAULT_CONFIG.parent}); options below override single keys")
    p.add_argument("--tiny", action="store_true",
                   help=f"the smoke configuration ({TINY_CONFIG.name}: 200 train / 100 test, 1 epoch, "
                        "1 seed, 2 prototypes at 32 px); explicit options still override it")
    types = {f: type(v) for f, v in asdict(Config()).items()}
    helps = {"arch2": "further students, comma-separated (the cross-architecture rows); '' or none: only --arch",
             "single_rows": "all: a single-prototype row per prototype; best: only the prototype "
                            "whose own features probe highest (the floors)",
             "extra_merges": "true/false: the CoOpt (procrustes) and CoOpt (cca) rows"}
    add_key_overrides(p, {name: _bool if types[name] is bool else types[name] for name in OVERRIDES},
                      helps=helps)
    p.add_argument("--seeds", help="comma-separated seeds")
    p.add_argument("--prototypes", help="comma-separated prototype specs")
    p.add_argument("--cache-dir", default="/tmp/coopt-benchmark-cache",
                   help="prototype feature cache (.npy, reused across runs)")
    p.add_argument("--work-dir", default=None,
                   help="optimized datasets and per-run results (default: <cache-dir>/work[-tiny])")
    p.add_argument("--out-dir", default=None,
                   help=f"results (default: {RESULTS_DIR}/<config file's stem>, "
                        "/tmp/coopt-benchmark-tiny for --tiny)")
    p.add_argument("--resume", action="store_true",
                   help="reuse per-run results already in the work dir (same config)")
    p.add_argument("--restore-runs", action="append", default=[], metavar="JSON",
                   help="with --resume: first put the training runs of a finished benchmark.json "
                        "into the work dir's run store (e.g. when the work dir is lost, or on "
                        "another machine); --resume then reuses those whose settings equal this "
                        "run's and retrains the rest; repeatable")
    p.add_argument("--skip-rows", default=None,
                   help="';'-separated rows not to train in this invocation (e.g. 'CoOpt (no "
                        "alignment);CoOpt (heads)' to fit a time limit); the report lists them as "
                        "not run")
    p.add_argument("--report-only", action="store_true",
                   help="re-render benchmark.md and the plot from an existing benchmark.json "
                        "(also a partial one, which a run rewrites after every finished row)")
    p.add_argument("--exclude-rows", default=None,
                   help="with --report-only: ;-separated rows to leave out of the report (e.g. runs "
                        "reused from the shared runs dir that this invocation did not train); they "
                        "are listed as not run")
    p.add_argument("--add-results", action="append", default=[], metavar="JSON",
                   help="with --report-only: add the seeds of another finished run's "
                        "benchmark.json (same settings; e.g. seeds or students run by a separate "
                        "invocation) to this report; repeatable")
    p.add_argument("--notes", default=None,
                   help="with --report-only: a Markdown file whose text goes under the title "
                        "(e.g. the commands that produced a run made of several invocations)")
    args = p.parse_args(argv)
    if args.restore_runs and not args.resume:
        p.error("--restore-runs fills the run store that --resume reuses: add --resume")
    if args.add_results and not args.report_only:
        p.error("--add-results merges finished runs into a report: use it with --report-only")
    if args.tiny and args.config:
        p.error("--tiny is a config file of its own: give --tiny or --config, not both")
    args.config = Path(args.config or (TINY_CONFIG if args.tiny else DEFAULT_CONFIG))
    values = load_config(args.config).as_dict()
    for name in OVERRIDES:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.seeds:
        values["seeds"] = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    if args.prototypes:
        values["prototypes"] = tuple(s.strip() for s in args.prototypes.split(",") if s.strip())
    return Config.from_dict(values), args


def _config_name(path: Path) -> str:
    """The config file as the results name it (relative to the repository when inside it)."""
    root = Path(__file__).resolve().parents[2]
    path = path.resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def run_keys(cfg: Config, arch: str = "") -> tuple[str, str]:
    """The settings a stored training run of ``arch`` is reused under: (every row but
    BYOL's, BYOL's).

    Keys that do not change what one run trains on are left out: the supplementary row's
    epoch count and the seed are part of the run's name instead, and which other seeds,
    students and rows are run does not change this one (so a run cut to seed 0 and one
    student is reused by the full run later). BYOL's optimizer recipe is left out of every
    other row's key, and BYOL's key has only the recipe of its own student, so changing one
    student's BYOL recipe retrains that student's BYOL rows and reuses the rest; the default
    recipe is left out of BYOL's key too (runs stored before the key existed used it); the
    same for BYOL's views (``byol_views``).
    """
    values = {k: v for k, v in asdict(cfg).items() if k not in RUN_KEY_IGNORES + BYOL_ONLY_KEYS}
    if not values.get("proto_image_sizes"):  # runs stored before the key read as before
        values.pop("proto_image_sizes", None)
    rows_key = json.dumps(values, sort_keys=True)
    byol = {"byol_recipe": cfg.byol_recipe_for(arch or cfg.arch), "byol_views": cfg.byol_views_for(arch or cfg.arch)}
    byol = {k: v for k, v in byol.items() if v != "shared"}  # runs stored before the keys read as before
    # A recipe that sets its own learning rate / weight decay does not read the config's (the
    # rows' lr, chosen on validation for CoOpt, must not retrain BYOL).
    own = BYOL_RECIPES[byol.get("byol_recipe", "shared")]
    byol_values = {k: v for k, v in values.items()
                   if not (k == "lr" and "lr_per_256" in own) and not (k == "weight_decay" and k in own)}
    return rows_key, json.dumps({**byol_values, **byol}, sort_keys=True) if byol else rows_key


BYOL_ROWS = (BYOL, BYOL_LONG, BYOL_CONVERGED)


def row_epochs(cfg: Config, row: str) -> int:
    """The epochs a row trains (for the converged row: the most it may train)."""
    return {BYOL_LONG: cfg.byol_long_epochs, BYOL_CONVERGED: cfg.byol_converged_epochs}.get(row, cfg.epochs)


def run_name(seed: int | str, arch: str, row: str, epochs: int) -> str:
    """The name a training run is stored under in the work dir's run store."""
    return f"seed{seed}-{arch}-{row}-{epochs}ep"


def restore_runs(results: dict[str, Any], runs_dir: Path) -> list[str]:
    """Store the training runs of a finished results file as ``--resume`` reuses them.

    Each run is stored under the settings of the file's own config (its BYOL rows under the
    BYOL key), so a later run reuses exactly those whose settings equal its own. A run already
    in the store is left as it is. Returns the names written.
    """
    if not results.get("finished", False):
        raise ValueError("restore runs from a finished benchmark.json (finished: false)")
    cfg = results_config(results["config"])
    runs_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for seed, seed_results in results["seeds"].items():
        for arch, runs in seed_results["runs"].items():
            for row, result in runs.items():
                if row == RANDOM:
                    continue  # probed, not trained: never stored
                epochs = row_epochs(cfg, row)
                path = runs_dir / f"{slug(run_name(seed, arch, row, epochs))}.json"
                if path.exists():
                    continue
                rows_key, byol_key = run_keys(cfg, arch)
                key = byol_key if row in BYOL_ROWS else rows_key
                path.write_text(json.dumps({"config": key, "result": result}))
                written.append(path.stem)
    return written


@dataclass
class BenchmarkData:
    """The images every seed draws from: the training source, each seed's sample, the test set
    and the validation split.

    ``union`` is every training image some seed uses, the validation images included, sorted
    (the prototypes encode it once).
    """

    train: Any
    sample_ids: dict[int, np.ndarray]
    union: np.ndarray
    test: Any
    test_ids: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    val_ids: np.ndarray      # the validation split: training images outside every seed's sample
    x_val: np.ndarray
    y_val: np.ndarray


@dataclass
class EncodedData:
    """Every prototype's features of ``BenchmarkData.union`` and of the test set, and its encoding meta."""

    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    metas: dict[str, dict[str, Any]]


@dataclass
class _Invocation:
    """What one ``run`` writes to: its results, the out dir, and the stored training runs."""

    cfg: Config
    results: dict[str, Any]
    out_dir: Path
    runs_dir: Path
    resume: bool
    t_start: float

    def cached_run(self, key: str, fn: Callable[[], dict[str, Any]], run_key: str) -> dict[str, Any]:
        """The training run stored under ``key`` when ``--resume`` finds one of ``run_key``'s
        settings, else ``fn()``, stored for the next invocation."""
        path = self.runs_dir / f"{slug(key)}.json"
        if self.resume and path.exists():
            stored = json.loads(path.read_text())
            if stored.get("config") == run_key:
                log(f"  reusing {key}")
                self.results["reused_runs"].append(key)
                return stored["result"]
        result = fn()
        path.write_text(json.dumps({"config": run_key, "result": result}))
        return result

    def write_outputs(self, final: bool) -> dict[str, Any]:
        """The JSON, Markdown and plot from what has run so far (after every finished row)."""
        results = self.results
        results["finished"] = final
        results["wall_seconds"] = time.perf_counter() - self.t_start
        results["environment"]["loadavg_end"] = os.getloadavg()
        summary = summarize(self.cfg, results)
        results["summary"] = summary
        _write_report(self.cfg, results, summary, self.out_dir)
        return summary


def _write_report(cfg: Config, results: dict[str, Any], summary: dict[str, Any], out_dir: Path) -> None:
    """``benchmark.json`` (with ``summary``), ``benchmark.md`` and the plot in ``out_dir``."""
    (out_dir / JSON_NAME).write_text(json.dumps(results, indent=2, default=float))
    (out_dir / MD_NAME).write_text(render_markdown(cfg, results, summary))
    plot(cfg, summary, out_dir / PLOT_NAME)


def open_data(cfg: Config) -> BenchmarkData:
    """The training source, every seed's sample of it, the validation split and the fixed
    test set."""
    train, test = open_source(cfg.data), open_source(cfg.test_data)
    sample_ids = {s: select_samples(len(train), cfg.num_train, s) for s in cfg.seeds}
    val_ids = validation_ids(len(train), cfg.num_train, cfg.num_val, cfg.val_seed)
    for seed, ids in sample_ids.items():
        check_disjoint(val_ids, ids, seed)
    test_ids = select_samples(len(test), cfg.num_test, cfg.test_seed)
    union = np.unique(np.concatenate([*sample_ids.values(), val_ids]))
    x_val = train.images(val_ids) if len(val_ids) else np.empty((0,), np.uint8)
    y_val = train.labels(val_ids) if len(val_ids) else np.empty(0, np.int64)
    return BenchmarkData(train, sample_ids, union, test, test_ids, test.images(test_ids), test.labels(test_ids),
                 val_ids, x_val, y_val)


def encode_prototypes(cfg: Config, cache_dir: Path, data: BenchmarkData) -> EncodedData:
    """One encode of every needed image per prototype (cached in ``cache_dir``)."""
    encoded = EncodedData({}, {}, {})
    for spec in cfg.prototypes:
        encoded.train[spec], encoded.metas[spec] = cached_features(
            cache_dir, spec, cfg.proto_size(spec), data.train, data.union,
            batch_size=cfg.encode_batch_size, split="train", device=cfg.device)
        encoded.test[spec], _ = cached_features(
            cache_dir, spec, cfg.proto_size(spec), data.test, data.test_ids,
            batch_size=cfg.encode_batch_size, split="test", device=cfg.device)
    return encoded


def _new_results(cfg: Config, encoded: EncodedData, *, command: str, config_file: str,
                 load_start: tuple[float, float, float]) -> dict[str, Any]:
    """The results of a run before any seed: its settings, encoding rates and environment."""
    rates = {spec: encoded.metas[spec]["images_per_second"] for spec in cfg.prototypes}
    return {
        "config": asdict(cfg), "config_file": config_file, "command": command,
        "encoding_rates": rates,
        "encoding_meta": encoded.metas, "seeds": {}, "reused_runs": [],
        "environment": {"torch": torch.__version__, "threads": cfg.threads,
                        "cpu_count": os.cpu_count(), "python": py_platform.python_version(),
                        "machine": py_platform.machine(), "loadavg_start": load_start},
    }


def run(cfg: Config, *, cache_dir: Path, work_dir: Path, out_dir: Path, resume: bool = False,
        command: str = "", config_file: str = "", skip_rows: Sequence[str] = ()) -> dict[str, Any]:
    """Run the whole benchmark and write the JSON, the Markdown and the plot.

    ``skip_rows``: row names not trained by this invocation (every student); the report lists
    them as not run, and a target that needs one is not run either.
    """
    t_start = time.perf_counter()
    cfg.check_runnable()
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    runs_dir = work_dir / "runs"
    runs_dir.mkdir(exist_ok=True)
    log(f"config: {json.dumps(asdict(cfg), sort_keys=True)}")

    data = open_data(cfg)
    load_start = os.getloadavg()  # before encoding: the load the run started under
    encoded = encode_prototypes(cfg, cache_dir, data)
    results = _new_results(cfg, encoded, command=command, config_file=config_file, load_start=load_start)
    log("encoding throughput (img/s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in results["encoding_rates"].items()))
    invocation = _Invocation(cfg, results, out_dir, runs_dir, resume, t_start)
    for seed in cfg.seeds:
        _run_seed(invocation, data, encoded, seed, work_dir, skip_rows)

    summary = invocation.write_outputs(final=True)
    log(f"done in {results['wall_seconds'] / 60:.1f} min: {out_dir / MD_NAME}")
    for c in summary["targets"]:
        state = "NOT RUN" if c.get("not_run") else ("MET    " if c["met"] else "MISSED ")
        log(f"  target {state} {c['target']}: {c['value']}")
    return results


def probe_floors(probes: ProbeSet, x_train: np.ndarray, x_test: np.ndarray,
                  feats: dict[str, np.ndarray], test_feats: dict[str, np.ndarray],
                  val_feats: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """The floors: raw pixels and each prototype's own features, probed directly (on the
    test set, and on the validation split where there is one)."""
    floors = {}
    # Gray pixels (the three RGB channels of Fashion-MNIST are copies).
    val_pixels = probes.x_val[..., 0] if probes.has_validation else None
    r = probes.probe(x_train[..., 0], x_test[..., 0], full=True, f_val=val_pixels)
    floors["raw pixels"] = dict(r, dim=int(np.prod(x_train.shape[1:3])))
    for spec, train_feats in feats.items():
        r = probes.probe(train_feats, test_feats[spec], full=True, f_val=val_feats.get(spec))
        floors[f"features:{spec}"] = dict(r, dim=int(train_feats.shape[1]))
    log(f"  floors: " + ", ".join(f"{k} {v['acc']:.4f}/{v['full_acc']:.4f}"
                                 for k, v in floors.items()))
    return floors


def _run_seed(invocation: _Invocation, data: BenchmarkData, encoded: EncodedData, seed: int, work_dir: Path,
              skip_rows: Sequence[str]) -> None:
    """One seed: its floors, its optimized datasets, then every student's rows."""
    cfg = invocation.cfg
    ids = data.sample_ids[seed]
    rows = np.searchsorted(data.union, ids)
    feats = {spec: encoded.train[spec][rows] for spec in cfg.prototypes}
    val_feats = {spec: encoded.train[spec][np.searchsorted(data.union, data.val_ids)] for spec in cfg.prototypes} \
        if len(data.val_ids) else {}
    x_train, y_train = data.train.images(ids), data.train.labels(ids)
    probes = ProbeSet(x_train, y_train, data.x_test, data.y_test, cfg.image_size, cfg.probe_epochs,
                      cfg.full_probe_steps, seed, device=cfg.device,
                      threads=1 if cfg.threads == 1 else None,
                      x_val=data.x_val if len(data.val_ids) else None, y_val=data.y_val if len(data.val_ids) else None)

    floors = probe_floors(probes, x_train, data.x_test, feats, encoded.test, val_feats)
    singles = pick_singles(cfg, floors)
    if cfg.single_rows == "best":
        log(f"  single-prototype row: only {singles[0]} (its own features probe highest on the "
            f"validation split: full probe {floors['features:' + singles[0]]['full_val_acc']:.4f})")

    log(f"seed {seed}: building datasets ({len(ids)} samples, {len(cfg.prototypes)} "
        f"participants, |S| = {cfg.shared_size})")
    built = build_datasets(cfg, seed, data.train, ids, feats, encoded.metas, work_dir, singles=singles)
    a = built["alignment"]
    log(f"  reference {a['reference']} ({a['reference_prototype']}); " + ", ".join(
        f"{p['name']} UV {p['uniform_value']:.3f} held-out residual {p['holdout_residual']:.3f}"
        for p in a["participants"]))
    seed_runs: dict[str, dict[str, Any]] = {}
    invocation.results["seeds"][str(seed)] = {
        "floors": floors, "runs": seed_runs, "alignment": built["alignment"],
        "validation": {"num_val": int(len(data.val_ids)), "val_seed": cfg.val_seed,
                       "disjoint_from_train": True},
        "encoding": built["encoding"], "num_train": int(len(ids)),
        "single_rows": {"mode": cfg.single_rows, "prototypes": list(singles),
                        "picked_by": SINGLE_PICK_RULE if cfg.single_rows == "best" else "all"},
    }
    for arch in cfg.archs():
        seed_runs[arch] = {}
        _train_student(invocation, built["datasets"], seed, arch, probes, x_train, y_train,
                       singles, skip_rows, seed_runs[arch])


def _train_student(invocation: _Invocation, datasets: dict[str, Any], seed: int, arch: str,
                   probes: ProbeSet, x_train: np.ndarray, y_train: np.ndarray, singles: Sequence[str],
                   skip_rows: Sequence[str], runs: dict[str, Any]) -> None:
    """One student's rows on one seed, random init first, into ``runs`` (the seed's results
    hold it, so the report written after every finished row shows it)."""
    from coopt_flower.students import create_student

    cfg = invocation.cfg
    torch.manual_seed(seed)  # the same init every training function draws
    init = create_student(arch, image_size=cfg.image_size)
    runs[RANDOM] = probes.probe_backbone(init, full=True)
    log(f"  seed {seed} {arch} {RANDOM}: probe {runs[RANDOM]['acc']:.4f}")
    del init
    invocation.write_outputs(final=False)
    for row in cfg.arch_rows(arch, singles, seed):
        if row in skip_rows:
            continue
        dataset = datasets.get(row)
        epochs = row_epochs(cfg, row)
        name = run_name(seed, arch, row, epochs)
        long_run = dict(plateau=Plateau(cfg.plateau_window, cfg.plateau_min_gain),
                        checkpoint_dir=invocation.runs_dir / "checkpoints" / slug(name)) \
            if row == BYOL_CONVERGED else {}
        runs[row] = invocation.cached_run(
            name,
            lambda row=row, dataset=dataset, epochs=epochs, long_run=long_run: train_row(
                row, arch, cfg, seed, probes, x_train, y_train, dataset, epochs, **long_run),
            run_keys(cfg, arch)[1 if row in BYOL_ROWS else 0])
        invocation.write_outputs(final=False)  # a cut run still leaves a report of what finished


SINGLE_PICK_RULE = ("the prototype whose own features probe highest on the validation split "
                    "(floors: full probe, ties broken by the per-epoch probe; the test set is not read)")


def pick_singles(cfg: Config, floors: dict[str, dict[str, float]]) -> list[str]:
    """The prototypes that get a single-prototype row: all, or the best by the floors'
    validation probes (never their test accuracy)."""
    if cfg.single_rows == "all":
        return list(cfg.prototypes)
    return [max(cfg.prototypes, key=lambda s: (floors[f"features:{s}"]["full_val_acc"],
                                               floors[f"features:{s}"]["val_acc"]))]


def _exclude_rows(results: dict[str, Any], rows: Sequence[str]) -> None:
    """Drop ``rows`` from every seed and student of ``results`` (``--exclude-rows``); the
    report then lists them as not run."""
    for row in rows:
        for seed_results in results["seeds"].values():
            for runs in seed_results["runs"].values():
                if runs.pop(row, None) is not None:
                    results.setdefault("excluded_rows", []).append(row)
        results["reused_runs"] = [k for k in results.get("reused_runs", []) if f"-{row}-" not in k]


def _row_list(text: Optional[str]) -> list[str]:
    """A ``;``-separated row list of the command line (``--skip-rows``, ``--exclude-rows``)."""
    return [r.strip() for r in (text or "").split(";") if r.strip()]


def rerender_report(args: argparse.Namespace, out_dir: Path) -> None:
    """``--report-only``: the report of ``out_dir``'s ``benchmark.json`` again, with the
    ``--add-results`` files combined in, ``--notes`` added and ``--exclude-rows`` left out."""
    results = json.loads((out_dir / JSON_NAME).read_text())
    for path in args.add_results:
        results = combine_results(results, json.loads(Path(path).read_text()), where=path)
    cfg = results_config(results["config"], where=str(out_dir / JSON_NAME))
    if args.notes:
        results["notes"] = Path(args.notes).read_text(encoding="utf-8")
    _exclude_rows(results, _row_list(args.exclude_rows))
    results["summary"] = summary = summarize(cfg, results)
    _write_report(cfg, results, summary, out_dir)
    log(f"re-rendered {out_dir / MD_NAME}")


def _checked_skip_rows(cfg: Config, text: Optional[str]) -> list[str]:
    """The rows of ``--skip-rows``; an unknown one stops the run before anything trains."""
    known = {r for arch in cfg.archs() for r in cfg.arch_rows(arch, [])} | {SINGLE}
    skip = _row_list(text)
    for row in skip:
        if row not in known and not row.startswith(SINGLE):
            raise SystemExit(f"--skip-rows: unknown row {row!r}; rows: {'; '.join(sorted(known))}")
    return skip


def main(argv=None) -> int:
    """``python -m simulations.benchmark``: run the benchmark, or re-render its report."""
    cfg, args = parse_args(argv)
    cache_dir = Path(args.cache_dir)
    work_dir = Path(args.work_dir) if args.work_dir else cache_dir / ("work-tiny" if cfg.tiny else "work")
    out_dir = Path(args.out_dir) if args.out_dir else (
        Path("/tmp/coopt-benchmark-tiny") if cfg.tiny else RESULTS_DIR / args.config.stem)
    if args.report_only:
        rerender_report(args, out_dir)
        return 0
    command = reproducing_command("simulations.benchmark", argv)
    skip = _checked_skip_rows(cfg, args.skip_rows)
    for path in args.restore_runs:
        names = restore_runs(json.loads(Path(path).read_text()), work_dir / "runs")
        log(f"restored {len(names)} training runs from {path}")
    run(cfg, cache_dir=cache_dir, work_dir=work_dir, out_dir=out_dir, resume=args.resume,
        command=command, config_file=_config_name(args.config), skip_rows=skip)
    return 0
