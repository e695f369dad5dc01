"""Training rows of the benchmark: train one method, probing the student after every epoch."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from coopt_flower.byol_views import ByolViews
from coopt_flower.probing import extract_features, linear_probe
from simulations.benchmark.config import BYOL, BYOL_CONVERGED, BYOL_LONG, SUPERVISED, Config
from simulations.benchmark.features import log
from simulations.benchmark.statistics import pack_outcomes


@dataclass
class ProbeSet:
    """The labeled images a student is probed on: its training images (the probe trains on
    their features), the test set (reported) and, when there is one, the validation split
    (every choice is made on it: the same classifier, read on other images)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    image_size: int
    probe_epochs: int
    full_probe_steps: int
    seed: int
    device: str = "cpu"
    threads: Optional[int] = 1  # CPU threads of the linear probe (None: torch's setting)
    x_val: Optional[np.ndarray] = None
    y_val: Optional[np.ndarray] = None

    @property
    def has_validation(self) -> bool:
        return self.x_val is not None and len(self.x_val) > 0

    def features(self, backbone) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        backbone = backbone.to(self.device)
        kw = dict(image_size=self.image_size, device=self.device)
        val = extract_features(backbone, self.x_val, **kw) if self.has_validation else None
        return extract_features(backbone, self.x_train, **kw), extract_features(backbone, self.x_test, **kw), val

    def probe(self, f_train, f_test, full: bool = False, f_val=None) -> dict[str, float]:
        """``acc`` (the per-epoch probe) and, with ``full``, ``full_acc`` on the test set; with
        validation features, ``val_acc`` / ``full_val_acc`` of the same classifiers."""
        kw = dict(seed=self.seed, device=self.device, num_threads=self.threads)
        val = {"val": (f_val, self.y_val)} if f_val is not None else None
        short = linear_probe(f_train, self.y_train, f_test, self.y_test, epochs=self.probe_epochs,
                             also_evaluate=val, **kw)
        out = {"acc": short.accuracy, **({"val_acc": short.other_accuracy["val"]} if val else {})}
        if full:
            long = linear_probe(f_train, self.y_train, f_test, self.y_test, epochs=None,
                                min_steps=self.full_probe_steps, also_evaluate=val, **kw)
            out["full_acc"] = long.accuracy
            out["full_probe_correct"] = pack_outcomes(long.test_correct)  # for intervals over test images
            if val:
                out["full_val_acc"] = long.other_accuracy["val"]
        return out

    def probe_backbone(self, backbone, full: bool = False) -> dict[str, float]:
        t = time.perf_counter()
        f_train, f_test, f_val = self.features(backbone)
        out = self.probe(f_train, f_test, full=full, f_val=f_val)
        out["probe_seconds"] = time.perf_counter() - t
        return out


@dataclass(frozen=True)
class Plateau:
    """When a run has converged: its validation probe gained less than ``min_gain`` over the
    last ``window`` epochs (the best of them against the best before them)."""

    window: int = 10
    min_gain: float = 0.003

    def reached(self, val_curve: list[float]) -> bool:
        if len(val_curve) <= self.window:
            return False
        return max(val_curve[-self.window:]) - max(val_curve[:-self.window]) < self.min_gain


PROBE_CURVE = "probe_curve.json"  # beside a resumable run's checkpoint: the probes so far


def train_row(row: str, arch: str, cfg: Config, seed: int, probes: ProbeSet,
              x_train: np.ndarray, y_train: np.ndarray, dataset=None,
              epochs: Optional[int] = None, *, plateau: Optional[Plateau] = None,
              checkpoint_dir: Optional[Path] = None) -> dict[str, Any]:
    """Train one row for ``epochs`` (default ``cfg.epochs``), probing after every epoch.

    With ``plateau`` the run stops early once its validation probe has plateaued (``epochs``
    is then the most it may take). With ``checkpoint_dir`` it is resumable: the student, the
    optimizer and the probes so far are kept there after every epoch, and a later call with
    the same directory continues from the last finished epoch (a run of hours on a CPU can be
    split into parts).
    """
    from coopt_flower.byol import byol_train_config, train_byol
    from coopt_flower.student_training import TrainConfig, train_on_optimized, train_supervised

    epochs = int(epochs or cfg.epochs)
    state = _resumed_probes(checkpoint_dir)
    curve, cpu_epochs = state["curve"], state["cpu_epochs"]
    if curve and "full_acc" in curve[-1]:  # finished before: load it, train nothing more
        epochs = len(curve)
    last = [time.perf_counter()]
    cpu_last = [time.process_time()]
    started, earlier_wall = time.perf_counter(), state["wall_seconds"]

    def on_epoch_end(epoch: int, backbone) -> dict[str, Any]:
        # CPU seconds of the process during the epoch: with one torch thread this is the
        # compute the epoch needed, whatever else runs on the machine (wall clock is not).
        cpu_epochs.append(time.process_time() - cpu_last[0])
        seconds = time.perf_counter() - last[0]
        t = time.perf_counter()
        f_train, f_test, f_val = probes.features(backbone)
        result = probes.probe(f_train, f_test, f_val=f_val)
        stop = plateau is not None and plateau.reached([c["val_acc"] for c in curve] + [result["val_acc"]])
        if stop or epoch == epochs:  # the last epoch: the full probe too
            result = probes.probe(f_train, f_test, full=True, f_val=f_val)
        result["probe_seconds"] = time.perf_counter() - t
        curve.append(result)
        _keep_probes(checkpoint_dir, curve, cpu_epochs, earlier_wall + time.perf_counter() - started)
        full = f", full probe {result['full_acc']:.4f}" if "full_acc" in result else ""
        log(f"  seed {seed} {arch} {row}: epoch {epoch}/{epochs} probe {result['acc']:.4f}"
            f"{full} (train {seconds:.1f} s, probe {result['probe_seconds']:.1f} s)")
        last[0] = time.perf_counter()
        cpu_last[0] = time.process_time()
        return {"stop": stop, "why": f"validation probe plateaued ({plateau})"} if stop else result

    config = TrainConfig(arch=arch, image_size=cfg.image_size, epochs=epochs,
                         batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                         seed=seed, device=cfg.device, progress=False,
                         checkpoint_dir=checkpoint_dir, resume=checkpoint_dir is not None)
    t = time.perf_counter()
    if row == SUPERVISED:
        result = train_supervised(x_train, y_train, config, on_epoch_end=on_epoch_end)
    elif row in (BYOL, BYOL_LONG, BYOL_CONVERGED):
        byol_config = byol_train_config(config, cfg.byol_recipe_for(arch))
        views = ByolViews.named(cfg.byol_views_for(arch), cfg.image_size)
        if views is not None:  # BYOL's own views, not the augmentation every method shares
            byol_config = dataclasses.replace(byol_config, augment=views)
        result = train_byol(x_train, byol_config, on_epoch_end=on_epoch_end)
    else:
        result = train_on_optimized(dataset, config, on_epoch_end=on_epoch_end)
    wall = time.perf_counter() - t + earlier_wall  # every part of a resumed run
    out = {"epoch_times": [float(s) for s in result.epoch_times],
           "epoch_cpu_times": cpu_epochs,
           "losses": [float(v) for v in result.losses],
           "probe_acc": [c["acc"] for c in curve],
           "full_probe_acc": curve[-1]["full_acc"],
           "full_probe_correct": curve[-1]["full_probe_correct"],
           **({"val_probe_acc": [c["val_acc"] for c in curve],
               "full_val_probe_acc": curve[-1]["full_val_acc"]} if probes.has_validation else {}),
           "probe_seconds": [c["probe_seconds"] for c in curve],
           "wall_seconds": wall}
    if plateau is not None:
        out["plateau"] = {"window": plateau.window, "min_gain": plateau.min_gain, "max_epochs": int(epochs),
                          "reached": plateau.reached([c["val_acc"] for c in curve])}
    return out


def _resumed_probes(checkpoint_dir: Optional[Path]) -> dict[str, Any]:
    """The probes a resumable run kept so far (none for a new run)."""
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / PROBE_CURVE
    if path is None or not path.exists():
        return {"curve": [], "cpu_epochs": [], "wall_seconds": 0.0}
    return json.loads(path.read_text())


def _keep_probes(checkpoint_dir: Optional[Path], curve: list[dict], cpu_epochs: list[float],
                 wall_seconds: float) -> None:
    if checkpoint_dir is None:
        return
    from coopt_flower.atomic import write_text_atomic

    Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(checkpoint_dir) / PROBE_CURVE, json.dumps(
        {"curve": curve, "cpu_epochs": cpu_epochs, "wall_seconds": wall_seconds}))
