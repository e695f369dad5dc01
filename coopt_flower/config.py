"""Run settings: the run-config keys a user sets, parsed and checked before any work starts.

Every key here appears in ``[tool.flwr.app.config]`` of ``pyproject.toml`` with its default and
can be changed with ``flwr run . --run-config "key=value ..."``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from coopt_flower.dataset_format import TARGET_DTYPES
from coopt_flower.devices import default_device
from coopt_flower.errors import did_you_mean
from coopt_flower.hosting import parse_round_prototypes, specs_for_round
from coopt_flower.merges import MERGE_CHOICES
from coopt_flower.partitions import PartitionError, parse_partitioner
from coopt_flower.protocol import EncodeConfig
from coopt_flower.refinement import REFINEMENT_POLICIES
from coopt_flower.scores import REFERENCE_SCORES

#: ``on-failure``: what happens to a failed participant's unfinished pages.
ON_FAILURE_POLICIES = ("reassign", "drop")
#: ``page-assignment``: how pages go to participants (:mod:`coopt_flower.engine.pages`).
PAGE_ASSIGNMENTS = ("waves", "steal")

# Run-config keys that define what a run's datasets contain: an output directory holding a run
# with other values for these is a different run.
RUN_IDENTITY_KEYS = ("data", "num_samples", "shared_size", "target_dim", "seed", "prototypes",
                     "image_size", "refinement", "train_epochs", "student_arch",
                     "student_image_size", "merge", "reference_score", "partitioner",
                     "refine_epochs", "refine_samples", "refine_hidden", "refine_lr", "refine_layers",
                     "round_prototypes")
#: What a run recorded before a key joined RUN_IDENTITY_KEYS meant (its behaviour then).
IDENTITY_DEFAULTS = {"partitioner": "iid", "refine_epochs": 30, "refine_samples": 2048, "refine_hidden": 1024,
                     "refine_lr": 1e-3, "refine_layers": "head", "round_prototypes": ""}


# The embedded default pool: ImageNet models shipped in PyPI wheels (offline), one per
# participant. ``pyproject.toml``'s ``prototypes`` holds the same list (a test checks it).
DEFAULT_PROTOTYPES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "onnx:open-nsfw")


def min_shared_size(target_dim: int) -> int:
    """Smallest shared subset accepted for ``target_dim``-d targets.

    The ridge map has n + 1 parameters per output and is fitted on 80% of S; the regularizer
    makes |S| < n workable (the default is 256 for n = 512), but below n / 16 samples the
    held-out check has too few points to choose its strength or to mean anything.
    """
    return max(8, target_dim // 16)


class ConfigError(ValueError):
    """A run-config value is unusable; the message names the key and what to fix."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def split_specs(value: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    return [item.strip() for item in str(value).split(",") if item.strip()]


def default_output_dir() -> str:
    """A fresh directory per run under the user's home (absolute, as the SuperLink needs)."""
    return str(Path.home() / "coopt-flower-outputs" / time.strftime("run-%Y%m%d-%H%M%S"))


@dataclass
class RunSettings:
    """Parsed run config of a CoOpt run (see ``pyproject.toml`` for every key's meaning)."""

    prototypes: list[str] = field(default_factory=lambda: list(DEFAULT_PROTOTYPES))
    data: str = "fashion-mnist"
    num_samples: int = 10000
    shared_size: int = 256
    target_dim: int = 512
    seed: int = 0
    output_dir: str = ""
    overwrite: bool = False
    image_size: int = 96
    batch_size: int = 128
    target_dtype: str = "float16"
    page_size: int = 1250
    max_message_mb: float = 64.0
    num_participants: int = 0
    min_participants: int = 1
    on_failure: str = "reassign"
    page_assignment: str = "waves"
    pages_in_flight: int = 2
    node_wait_s: float = 120.0
    reply_timeout_s: float = 3600.0
    num_server_rounds: int = 1
    refinement: str = "switch"
    train_epochs: int = 0
    student_arch: str = "small-cnn"
    student_image_size: int = 0
    student_batch_size: int = 64  # the benchmark's: a multi-round study trains its students alike
    probe_data: str = "fashion-mnist:test"
    probe_train_samples: int = 2000
    probe_test_samples: int = 1000
    upload_local_images: bool = False
    on_bad_sample: str = "skip"
    verify_images: bool = False
    device: str = "auto"
    merge: str = "align-ridge"
    reference_score: str = "uniform"
    partitioner: str = "iid"
    refine_epochs: int = 30
    refine_samples: int = 2048
    refine_hidden: int = 1024
    refine_lr: float = 1e-3
    refine_layers: str = "head"
    round_prototypes: str = ""

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunSettings:
        """Build from a Flower run config (unknown keys are left for other components)."""
        values: dict[str, Any] = {}
        for attr in (f.name for f in fields(cls)):
            key = attr.replace("_", "-")  # run-config keys use Flower's dashed style
            if key in run_config:
                values[attr] = run_config[key]
        if "prototypes" in values:
            values["prototypes"] = split_specs(values["prototypes"])
        for attr in ("num_samples", "shared_size", "target_dim", "seed", "image_size",
                     "batch_size", "page_size", "num_participants", "min_participants", "pages_in_flight",
                     "num_server_rounds", "train_epochs", "student_image_size", "student_batch_size",
                     "probe_train_samples", "probe_test_samples", "refine_epochs", "refine_samples",
                     "refine_hidden"):
            if attr in values:
                value = values[attr]
                try:
                    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                        raise ValueError(value)  # seed=1.5 is not seed 1
                    values[attr] = int(value)
                except (TypeError, ValueError):
                    raise ConfigError(f"{attr.replace('_', '-')} must be an integer, got {value!r}") from None
        settings = cls(**values)
        if not settings.output_dir:
            settings.output_dir = default_output_dir()
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`ConfigError` for the first unusable value."""
        _require(bool(self.prototypes), "prototypes is empty: give a comma list of prototype specs")
        _require(self.num_samples >= 0, f"num-samples must be >= 0 (0 = all), got {self.num_samples}")
        _require(self.target_dim >= 1, f"target-dim must be >= 1, got {self.target_dim}")
        _require(self.shared_size >= 8, f"shared-size must be >= 8 to fit and check alignments, got {self.shared_size}")
        _require(self.batch_size >= 1, f"batch-size must be >= 1, got {self.batch_size}")
        _require(self.image_size >= 0, f"image-size must be >= 0 (0 = native), got {self.image_size}")
        _require(self.page_size >= 0, f"page-size must be >= 0 (0 = from max-message-mb), got {self.page_size}")
        _require(self.max_message_mb > 0, f"max-message-mb must be > 0, got {self.max_message_mb}")
        _require(self.target_dtype in TARGET_DTYPES,
                 f"target-dtype must be one of {', '.join(TARGET_DTYPES)}, got {self.target_dtype!r}")
        _require(self.num_participants >= 0,
                 f"num-participants must be >= 0 (0 = one per prototype spec), got {self.num_participants}")
        _require(self.min_participants >= 1, f"min-participants must be >= 1, got {self.min_participants}")
        _require(self.min_participants <= self.expected_participants,
                 f"min-participants ({self.min_participants}) exceeds the {self.expected_participants} "
                 "participants the run waits for")
        _require(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
                 f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        _require(self.on_bad_sample in ("skip", "fail"),
                 f"on-bad-sample must be skip or fail, got {self.on_bad_sample!r}")
        _require(self.on_failure in ON_FAILURE_POLICIES,
                 f"on-failure must be one of {', '.join(ON_FAILURE_POLICIES)}, got {self.on_failure!r}")
        _require(self.page_assignment in PAGE_ASSIGNMENTS,
                 f"page-assignment must be one of {', '.join(PAGE_ASSIGNMENTS)}, got {self.page_assignment!r}")
        _require(self.pages_in_flight >= 1, f"pages-in-flight must be >= 1, got {self.pages_in_flight}")
        _require(self.node_wait_s > 0 and self.reply_timeout_s > 0,
                 "node-wait-s and reply-timeout-s must be > 0")
        min_shared = min_shared_size(self.target_dim)
        _require(self.shared_size >= min_shared,
                 f"shared-size {self.shared_size} is too small to align {self.target_dim}-d targets: "
                 f"use at least {min_shared} (or a smaller target-dim)")
        _require(self.num_server_rounds >= 1, f"num-server-rounds must be >= 1, got {self.num_server_rounds}")
        _require(self.refinement in REFINEMENT_POLICIES,
                 f"refinement must be one of {', '.join(REFINEMENT_POLICIES)}, got {self.refinement!r}")
        _require(self.train_epochs >= 0, f"train-epochs must be >= 0 (0 = no student), got {self.train_epochs}")
        _require(self.num_server_rounds == 1 or self.refinement == "static" or self.train_epochs > 0,
                 f"refinement={self.refinement} over {self.num_server_rounds} rounds needs a student: "
                 "set train-epochs > 0 (or refinement=static)")
        if self.refinement == "distill":
            try:
                self.refine_budget().check()
            except (TypeError, ValueError) as error:
                raise ConfigError(str(error)) from None
        try:
            self.prototype_changes()
        except ValueError as error:
            raise ConfigError(str(error)) from None
        _require(self.merge in MERGE_CHOICES,
                 f"merge must be one of {', '.join(MERGE_CHOICES)}, got {self.merge!r}")
        _require(self.reference_score in REFERENCE_SCORES,
                 f"reference-score must be one of {', '.join(REFERENCE_SCORES)}, got {self.reference_score!r}")
        try:
            self.partitioner = str(parse_partitioner(self.partitioner))
        except PartitionError as error:
            raise ConfigError(str(error)) from None
        _require(self.student_image_size >= 0, "student-image-size must be >= 0 (0 = the data's size)")
        _require(self.student_batch_size >= 1, f"student-batch-size must be >= 1, got {self.student_batch_size}")
        _require(os.path.isabs(self.output_dir),
                 f"output-dir must be an absolute path (the SuperLink's working directory is not "
                 f"yours), got {self.output_dir!r}")
        if self.num_samples:
            _require(self.shared_size <= self.num_samples,
                     f"shared-size ({self.shared_size}) exceeds num-samples ({self.num_samples})")

    def resolved_device(self) -> str:
        """Where the platform trains and probes its student: ``auto`` is CUDA when this
        machine has a GPU, else the CPU. A GPU asked for where there is none is refused."""
        import torch

        if self.device == "auto":
            return default_device()
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={self.device} but this platform has no CUDA GPU: use "
                              "device=auto or device=cpu")
        return self.device

    def encode_config(self, encoder: str = "own", slot: int = -1, refined: str = "") -> EncodeConfig:
        """How participants encode for this run (record ``config`` of every request);
        ``encoder`` and ``slot`` name who encodes with what (``refined``: which refined head)."""
        return EncodeConfig(target_dim=self.target_dim, projection_seed=self.seed, batch_size=self.batch_size,
                            image_size=self.image_size, data=self.data, encoder=encoder, slot=slot,
                            refined=refined)

    def refine_budget(self):
        """The :class:`~coopt_flower.distill.RefineBudget` of ``refinement = distill``."""
        from coopt_flower.distill import RefineBudget

        try:
            lr = float(self.refine_lr)
        except (TypeError, ValueError):
            raise ConfigError(f"refine-lr must be a number, got {self.refine_lr!r}") from None
        return RefineBudget(epochs=self.refine_epochs, samples=self.refine_samples, hidden=self.refine_hidden,
                            lr=lr, layers=self.refine_layers)

    def refine_config(self, server_round: int) -> EncodeConfig:
        """The shared-subset config that asks participants to refine first (distill)."""
        budget = self.refine_budget()
        return dataclasses.replace(self.encode_config(), refine_epochs=budget.epochs, refine_hidden=budget.hidden,
                                   refine_lr=budget.lr, refine_layers=budget.layers,
                                   refine_seed=self.seed + server_round)

    def prototype_changes(self) -> dict[int, list[str]]:
        """``round-prototypes`` as ``{round: specs}``."""
        return parse_round_prototypes(self.round_prototypes, len(self.prototypes), self.num_server_rounds)

    def prototypes_for_round(self, server_round: int) -> list[str]:
        """The prototype list of ``server_round`` (``round-prototypes`` changes it from a round on)."""
        return specs_for_round(self.prototypes, self.prototype_changes(), server_round)

    def all_prototypes(self) -> list[str]:
        """Every spec any round runs (what pre-flight checks)."""
        changes = self.prototype_changes()
        return list(dict.fromkeys([*self.prototypes, *(s for specs in changes.values() for s in specs)]))

    @property
    def expected_participants(self) -> int:
        """How many nodes the platform waits for (default: one per prototype spec)."""
        return self.num_participants or len(self.prototypes)

    def rows_per_page(self, extra_bytes_per_row: int = 0) -> int:
        """Samples per ``train.optimize`` page so one reply stays under max-message-mb.

        ``extra_bytes_per_row`` counts what a reply carries beside targets and ids (uploaded
        pixels); an explicit ``page-size`` is then lowered to the bound if needed.
        """
        # Replies carry float32 targets plus int64 ids.
        bound = max(1, int(self.max_message_mb * 2**20) // (self.target_dim * 4 + 8 + extra_bytes_per_row))
        if not self.page_size:
            return bound
        return min(self.page_size, bound) if extra_bytes_per_row else self.page_size

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """The values that make two runs' outputs comparable (see RUN_IDENTITY_KEYS)."""
        return {key: getattr(self, key) for key in RUN_IDENTITY_KEYS}


# --------------------------------------------------------------------------- run-config keys
#: Where ``[tool.flwr.app.config]`` lives: the app's pyproject, next to this package.
APP_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def app_run_config(pyproject: str | os.PathLike = APP_PYPROJECT) -> dict[str, Any]:
    """The run-config keys and defaults an app declares (``[tool.flwr.app.config]``)."""
    import tomllib

    try:
        data = tomllib.loads(Path(pyproject).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read the app's run config from {pyproject}: {error}") from None
    return dict(data.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {}))


def check_run_config_keys(overrides: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Refuse an unknown run-config key in one line, naming the closest valid key.

    Flower refuses it too, but as "Invalid run configuration" without saying which key.
    """
    valid = sorted(valid)
    for key in overrides:
        if key not in valid:
            hint = did_you_mean(key, valid).strip(" ()") or f"valid keys: {', '.join(valid)}"
            raise ConfigError(f"unknown run-config key {key!r}: {hint}")


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``key=value`` items as a dict; values are TOML (``3``, ``true``, ``"x"``) or plain text."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value, got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value.strip()
    return out


def check_run_config(overrides: Mapping[str, Any], pyproject: str | os.PathLike = APP_PYPROJECT) -> RunSettings:
    """Keys and values of a ``flwr run --run-config`` override, checked as the ServerApp would
    (without touching data or disk: :func:`coopt_flower.preflight.preflight` does that);
    returns the settings."""
    defaults = app_run_config(pyproject)
    check_run_config_keys(overrides, defaults)
    return RunSettings.from_run_config({**defaults, **overrides})
