"""Checks that run before any work starts, so a bad config fails in seconds with one line."""

from __future__ import annotations

import json
from pathlib import Path

from coopt_flower.config import ConfigError, RunSettings
from coopt_flower.data import DataSourceError, ImageSource, open_source
from coopt_flower.atomic import write_text_atomic
from coopt_flower.prototypes import available_prototypes, parse_prototype_spec

RUN_FILE = "run.json"


def check_prototypes(settings: RunSettings) -> None:
    for spec in settings.prototypes:
        try:
            parse_prototype_spec(spec)
        except ValueError as error:
            # The registry's message lists the forms over several lines; keep one line here.
            first = str(error).strip().splitlines()[0].split(". ")[0].rstrip(":.")
            raise ConfigError(f"prototypes: {first}; known forms: "
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
    """Claim ``output-dir`` for this run; refuse one that holds a different run.

    The directory records the run's identity (data, samples, seed, prototypes, ...) in
    ``run.json``; a later run with the same identity may continue there, another one may not
    unless ``overwrite`` is set.
    """
    out = Path(settings.output_dir)
    run_file = out / RUN_FILE
    identity = settings.identity()
    if run_file.exists():
        try:
            recorded = json.loads(run_file.read_text(encoding="utf-8")).get("identity", {})
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
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_file, json.dumps({"identity": identity}, indent=2, sort_keys=True))
    return out


def preflight(settings: RunSettings) -> ImageSource:
    """Validate prototypes, data and output directory; returns the opened data source."""
    check_prototypes(settings)
    source = check_data(settings)
    check_output_dir(settings)
    return source
