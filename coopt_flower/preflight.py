"""Checks that run before any work starts, so a bad config fails in seconds with one line.

Order: prototypes, data, output directory (stale temporaries of a crashed run removed; a
read-only, immutable or unwritable one refused; claimed only when the run writes its first
data, :func:`claim_output_dir`), free disk space for the rounds' datasets, and, with
``verify-images`` or ``on-bad-sample=fail``, every image decoded once.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from coopt_flower.atomic import write_text_atomic
from coopt_flower.bad_samples import BadSampleError
from coopt_flower.config import IDENTITY_DEFAULTS, ConfigError, RunSettings
from coopt_flower.data import DataSourceError, ImageSource, ScreenedSource, open_source, scan_images, select_samples
from coopt_flower.dataset_writer import publish_reserve_bytes
from coopt_flower.errors import EXIT_CONFIG, EXIT_DATA, EXIT_OUTPUT, OutputDirError, describe_os_error, one_line
from coopt_flower.help_format import DefaultsHelpFormatter
from coopt_flower.prototypes import available_prototypes, parse_prototype_spec

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
# Hidden temporaries this project writes in an output directory (atomic writes and rounds
# being written); a crashed run leaves them behind, and they may fill the disk.
STALE_PATTERNS = (".round-*.tmp-*", ".round-*.old-*", ".run.json.tmp-*", ".checkpoint.json.tmp-*",
                  ".progress.json.tmp-*", ".summary.md.tmp-*")
DISK_MARGIN = 1.10          # free space must exceed the estimate by 10%
DISK_MARGIN_BYTES = 1 << 20  # ... plus 1 MiB of slack (directory blocks, run.json)


def check_prototypes(settings: RunSettings) -> None:
    for spec in settings.all_prototypes():
        key = "prototypes" if spec in settings.prototypes else "round-prototypes"
        try:
            parse_prototype_spec(spec)
        except ValueError as error:
            # The registry's message lists the forms over several lines; keep one line here.
            first = str(error).strip().splitlines()[0].split(". ")[0].rstrip(":.")
            raise ConfigError(f"{key}: {first}; known forms: "
                              f"{', '.join(available_prototypes())}") from None


def check_data(settings: RunSettings) -> ImageSource:
    try:
        source = open_source(settings.data)
    except (DataSourceError, OSError) as error:
        raise ConfigError(f"data: {error}") from None
    available = len(source)
    if settings.num_samples > available:
        raise ConfigError(f"num-samples ({settings.num_samples}) exceeds the {available} samples "
                          f"in {settings.data}: lower it or use 0 for all")
    total = settings.num_samples or available
    if settings.expected_participants > total:
        raise ConfigError(f"{settings.expected_participants} participants but only {total} samples: "
                          "raise num-samples or use fewer participants")
    if settings.shared_size > total:
        raise ConfigError(f"shared-size ({settings.shared_size}) exceeds the {total} samples of the run")
    if settings.train_epochs and settings.probe_data:
        try:
            open_source(settings.probe_data)
        except (DataSourceError, OSError) as error:
            raise ConfigError(f"probe-data: {error} (or set probe-data=\"\" to skip the probe)") from None
    return source


def check_output_dir(settings: RunSettings) -> Path:
    """Check that ``output-dir`` can take this run, writing nothing of the run yet.

    The directory records the run's identity (data, samples, seed, prototypes, ...) in
    ``run.json`` once the run writes data (:func:`claim_output_dir`); a later run with the same
    identity may continue there, another one may not unless ``overwrite`` is set. A run refused
    here or later, before it writes, leaves the directory as it found it (a stale temporary of
    a crashed run aside), so the obvious retry (say, a smaller ``target-dim``) is not refused
    as "a different run".
    """
    out = Path(settings.output_dir)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"output-dir {out} is a file, not a directory: choose another output-dir")
    remove_stale_temporaries(out)
    run_file = out / RUN_FILE
    identity = settings.identity()
    if run_file.exists():
        try:
            recorded = {**IDENTITY_DEFAULTS, **json.loads(run_file.read_text(encoding="utf-8")).get("identity", {})}
        except json.JSONDecodeError:
            recorded = {"unreadable": True}
        if recorded != identity and not settings.overwrite:
            differing = sorted(k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k))
            raise ConfigError(
                f"output-dir {out} holds a different run ({', '.join(differing)} differ): choose "
                "a new output-dir or set overwrite=true")
    elif out.exists() and any(out.iterdir()) and not settings.overwrite:
        raise ConfigError(f"output-dir {out} is not empty and holds no CoOpt run: choose a new "
                          "output-dir or set overwrite=true")
    _check_writable(out)
    return out


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(out: Path) -> None:
    """Write and remove a probe file where the run will write (the directory, or the nearest
    existing parent it will be made in): read-only, immutable or foreign is refused now."""
    where = _nearest_existing(out)
    try:
        with tempfile.NamedTemporaryFile(dir=where, prefix=f".{RUN_FILE}.tmp-"):
            pass
    except OSError as error:  # read-only, immutable, not ours, or full
        raise OutputDirError(f"output-dir: {describe_os_error(error, out)}") from None


def claim_output_dir(settings: RunSettings) -> Path:
    """Make ``output-dir`` and record this run's identity in it (``run.json``): called when the
    run is about to write its first data, not before."""
    out = Path(settings.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / RUN_FILE, json.dumps({"identity": settings.identity()}, indent=2, sort_keys=True))
    except OSError as error:  # read-only, immutable, not ours, or full
        raise OutputDirError(f"output-dir: {describe_os_error(error, out)}") from None
    return out


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the hidden temporaries a crashed run left in ``out`` (before anything is written)."""
    if not out.is_dir():
        return []
    stale = sorted({p for pattern in STALE_PATTERNS for p in out.glob(pattern)})
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temporary file(s) of an interrupted run from %s", len(stale), out)
    return stale


def estimate_round_bytes(settings: RunSettings, num_samples: int) -> int:
    """Bytes one round needs on disk at its peak: targets and owners per sample, and what
    publishing writes (:func:`~coopt_flower.dataset_writer.publish_reserve_bytes`: ids,
    every participant's shared-subset embeddings, manifest, report and plots), which the writer
    holds from the start. Uploaded node-local images and student checkpoints are not counted."""
    per_sample = settings.target_dim * np.dtype(settings.target_dtype).itemsize + 2
    shared = settings.expected_participants * settings.shared_size * settings.target_dim * 4
    return num_samples * per_sample + publish_reserve_bytes(num_samples, shared)


def check_disk_space(settings: RunSettings, num_samples: int) -> int:
    """Refuse in one line when ``output-dir`` lacks room for the rounds still to write.

    Returns the estimate in bytes.
    """
    out = Path(settings.output_dir)
    todo = sum(not (out / f"round-{r:03d}").exists() for r in range(1, settings.num_server_rounds + 1))
    needed = todo * estimate_round_bytes(settings, num_samples)
    free = shutil.disk_usage(_nearest_existing(out)).free  # the directory may not be made yet
    if needed and free < needed * DISK_MARGIN + DISK_MARGIN_BYTES:
        raise OutputDirError(
            f"output-dir {out} has {free / 2**20:.1f} MiB free, the run's datasets (with their reports and plots) need about "
            f"{needed * DISK_MARGIN / 2**20 + 1:.1f} MiB: free space, choose another output-dir, "
            "or lower num-samples / target-dim (target-dtype=float16 halves the targets)")
    return needed


def check_images(settings: RunSettings, source: ImageSource) -> ImageSource:
    """With ``verify-images`` or ``on-bad-sample=fail``, decode every image of the run first.

    Returns the source, wrapped with the samples that do not decode (the round leaves them
    out) when there are any; ``fail`` raises at the first one, naming the file.
    """
    if not (settings.verify_images or settings.on_bad_sample == "fail"):
        return source
    ids = select_samples(len(source), settings.num_samples, settings.seed)
    fail = settings.on_bad_sample == "fail"
    bad = scan_images(source, ids, stop_at_first=fail)
    if bad and fail:
        raise BadSampleError(bad[0], source.spec)
    if not bad:
        return source
    log.warning("%d of %d images cannot be decoded and are left out (listed in the report)", len(bad), len(ids))
    if len(ids) - len(bad) < settings.shared_size:
        raise DataSourceError(f"only {len(ids) - len(bad)} images of {settings.data} decode, fewer "
                              f"than shared-size={settings.shared_size}: fix the images or lower it")
    return ScreenedSource(source, bad)


def preflight(settings: RunSettings, *, scan: bool = True) -> ImageSource:
    """Validate prototypes, data, output directory and disk space (and, with ``scan`` and if
    the run config asks, every image); returns the opened data source. Writes nothing of the
    run: the ServerApp, ``coopt run`` before it starts Flower, and ``coopt check`` all call it."""
    check_prototypes(settings)
    if settings.train_epochs:
        settings.resolved_device()  # a GPU asked for where there is none: one line, now
    source = check_data(settings)
    check_output_dir(settings)
    check_disk_space(settings, settings.num_samples or len(source))
    return check_images(settings, source) if scan else source


def exit_code(error: BaseException) -> int | None:
    """The documented exit code of an error the user can fix (210 configuration, 211 data,
    212 output directory), None for anything else."""
    if isinstance(error, ConfigError):
        return EXIT_CONFIG
    if isinstance(error, DataSourceError):
        return EXIT_DATA
    if isinstance(error, (OutputDirError, FileExistsError)):
        return EXIT_OUTPUT
    return None


def main(argv: list[str] | None = None) -> int:
    """``coopt check key=value ...`` (``python -m coopt_flower.preflight check ...``): check a
    run config as the ServerApp will, keys, values, prototypes, data and output directory,
    before ``flwr run``. Exit 0 when it is usable, else one line and the exit code the run would
    stop with (210 configuration, 211 data, 212 output directory)."""
    import argparse
    import sys

    from coopt_flower.config import APP_PYPROJECT, check_run_config, parse_overrides

    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter, prog="coopt check", description="Check a run config before `flwr run`: "
                                     "keys, values, prototypes, data and the output directory.")
    parser.add_argument("overrides", nargs="*", help="key=value, as for flwr run --run-config")
    parser.add_argument("--pyproject", default=str(APP_PYPROJECT), help="the app's pyproject.toml")
    parser.add_argument("--scan-images", action="store_true",
                        help="also decode every image the run would read (as verify-images does)")
    args = parser.parse_args(argv[1:] if argv and argv[0] == "check" else argv)
    try:
        overrides = parse_overrides(args.overrides)
        preflight(check_run_config(overrides, args.pyproject), scan=args.scan_images)
    except Exception as error:
        code = exit_code(error)
        if code is None:
            raise
        print(f"run config: {one_line(error, 2000)}", file=sys.stderr)
        return code
    print(f"run config ok ({len(overrides)} override(s) checked, with the prototypes, data and output directory)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(__import__("sys").argv[1:]))
