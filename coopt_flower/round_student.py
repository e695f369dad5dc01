"""The round's student: trained on a round's dataset, probed, and packed for the next round.

Multi-round CoOpt (:mod:`coopt_flower.refinement` decides how the student is used) trains a
student on round r's dataset (:func:`train_round_student`) and sends it to the participants
of round r+1 as plain arrays plus a JSON config (:func:`student_payload`), so the Flower
shells can put it in an ``ArrayRecord`` / ``ConfigRecord`` and nothing here imports Flower; a
participant rebuilds it as a prototype (:func:`student_from_payload`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def student_payload(checkpoint_path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A trained student as ``(backbone + head state as numpy arrays, config)`` for transport.

    The head is part of the prototype: it maps the backbone's features into the target space
    the student was trained to predict, which is far more uniform than its raw (post-ReLU)
    features and so a fair candidate for the reference.
    """
    from coopt_flower.checkpoints import load_student

    backbone, head, checkpoint = load_student(checkpoint_path)
    if head is None:
        raise ValueError(f"{checkpoint_path} has no target head: train it with train_on_optimized")
    state = {f"backbone.{k}": v.detach().cpu().numpy() for k, v in backbone.state_dict().items()}
    state.update({f"head.{k}": v.detach().cpu().numpy() for k, v in head.state_dict().items()})
    config = {k: checkpoint["config"][k] for k in ("arch", "arch_kwargs", "image_size", "mean", "std",
                                                    "target_dim") if k in checkpoint["config"]}
    config["digest"] = payload_digest(state)
    return state, config


def payload_digest(state: dict[str, np.ndarray]) -> str:
    """A short fingerprint of the student's weights (names the student in reports)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(state[key]).tobytes())
    return digest.hexdigest()[:16]


def student_from_payload(state: dict[str, np.ndarray], config: dict[str, Any], *, device: str = "cpu",
                         image_size: int | None = None):
    """Rebuild the student prototype (backbone + head) on a participant from transported weights."""
    import torch

    from coopt_flower.prototypes import student_prototype
    from coopt_flower.students import StudentWithHead, create_student

    backbone = create_student(config["arch"], image_size=int(config["image_size"]), device=device,
                              **config.get("arch_kwargs", {}))
    model = StudentWithHead(backbone, int(config["target_dim"]))
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return student_prototype(model.eval(), config, spec=f"student:{config.get('digest', '?')}",
                             device=device, image_size=image_size)


def train_round_student(
    dataset_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    arch: str = "small-cnn",
    epochs: int = 3,
    image_size: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    probe_data: str = "",
    probe_train_samples: int = 2000,
    probe_test_samples: int = 1000,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train a student on one round's optimized dataset and probe it.

    Writes ``last.pt`` (the checkpoint), ``loss_curve.json`` and ``student.json`` (this
    function's result) into ``out_dir``; the result is returned too.

    The probe trains a linear classifier on the labels of up to ``probe_train_samples`` of the
    dataset's own samples and tests on ``probe_test_samples`` of ``probe_data`` (e.g.
    ``fashion-mnist:test``); it is skipped when ``probe_data`` is empty or unlabeled. Training
    and feature extraction run on ``device``.
    """
    from coopt_flower.data import open_source, select_samples
    from coopt_flower.atomic import write_text_atomic
    from coopt_flower.dataset_format import load_optimized_dataset
    from coopt_flower.probing import probe_backbone
    from coopt_flower.student_training import TrainConfig, train_on_optimized

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_optimized_dataset(dataset_path)
    start = time.perf_counter()
    config = TrainConfig(arch=arch, epochs=epochs, image_size=image_size, batch_size=batch_size,
                         seed=seed, device=device, checkpoint_dir=out, progress=False)
    trained = train_on_optimized(dataset, config)
    result: dict[str, Any] = {
        "dataset": str(dataset_path), "arch": arch, "epochs": epochs, "seed": seed,
        "train_seconds": time.perf_counter() - start, "final_loss": trained.losses[-1],
        "checkpoint": str(trained.checkpoint_path), "probe_accuracy": None,
    }
    train_labels = dataset.labels()
    if probe_data and train_labels is not None:
        test = open_source(probe_data)
        test_ids = select_samples(len(test), probe_test_samples, seed=0)
        test_labels = test.labels(test_ids)
        if test_labels is not None:
            rows = select_samples(len(dataset), probe_train_samples, seed=0)
            ids = dataset.sample_ids[rows]
            probe = probe_backbone(
                trained.backbone, dataset.source.images(ids), train_labels[rows],
                test.images(test_ids), test_labels, image_size=trained.config["image_size"],
                mean=trained.config["mean"], std=trained.config["std"], seed=seed, device=device)
            result["probe_accuracy"] = float(probe.accuracy)
            result["probe_data"] = probe_data
    write_text_atomic(out / "student.json", json.dumps(result, indent=2))
    return result
