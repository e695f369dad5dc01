"""Checkpoints of trained students: writing, reading, and rebuilding the student.

One format for every training method (CoOpt, supervised, BYOL): a ``torch.save``d dict
with

``format``, ``version``
    ``"coopt-student"`` and :data:`CHECKPOINT_VERSION`.
``config``
    The run record (JSON-serializable): ``method``, ``arch``, ``arch_kwargs``,
    ``image_size``, the normalization ``mean``/``std``, ... .
``epoch``, ``losses``, ``epoch_times``
    Progress so far (a run resumes from here).
``model``, ``optimizer``
    State dicts; the student's weights are the ``backbone.`` entries of ``model`` and a
    linear head, if any, the ``head.`` entries (``heads.<k>.`` for a ``merge=heads`` student,
    one per participant; ``config["exposed_head_index"]`` says which one :func:`load_student`
    returns).
anything else
    Method-specific state (CoOpt adds ``target_mean`` and ``target_std``).

Checkpoints are written atomically, so a run killed mid-save leaves the previous epoch's
file intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from coopt_flower.atomic import torch_save_atomic, write_text_atomic
from coopt_flower.students import create_student

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "LOSS_CURVE_NAME",
    "load_checkpoint",
    "load_student",
    "save_checkpoint",
    "write_loss_curve",
]

CHECKPOINT_NAME = "last.pt"
LOSS_CURVE_NAME = "loss_curve.json"
CHECKPOINT_FORMAT = "coopt-student"
CHECKPOINT_VERSION = 1


def save_checkpoint(
    path: str | os.PathLike,
    *,
    record: dict[str, Any],
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    losses: list[float],
    epoch_times: list[float],
    extra_state: Optional[dict[str, Any]] = None,
) -> None:
    """Write one checkpoint atomically (see the module docstring for its contents)."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": record,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "losses": losses,
        "epoch_times": epoch_times,
        **(extra_state or {}),
    }
    torch_save_atomic(state, Path(path))


def write_loss_curve(
    path: str | os.PathLike, losses: list[float], epoch_times: list[float], record: dict[str, Any]
) -> None:
    """Write the per-epoch losses and times as JSON (atomically), for plots and reports."""
    curve = {"epoch": list(range(1, len(losses) + 1)), "loss": losses,
             "epoch_time_s": epoch_times, "config": record}
    write_text_atomic(Path(path), json.dumps(curve, indent=2))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by this module (a file, or a directory holding ``last.pt``).

    Raises
    ------
    ValueError
        If the file is not such a checkpoint, or was written by a newer version.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    if ckpt.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} has checkpoint version {ckpt['version']}, newer than this code "
            f"({CHECKPOINT_VERSION})"
        )
    return ckpt


def _sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_student(
    path: str | os.PathLike, map_location: Any = "cpu"
) -> tuple[nn.Module, Optional[nn.Module], dict[str, Any]]:
    """Rebuild a trained student from a checkpoint.

    Works for CoOpt, supervised and BYOL checkpoints (all store the backbone
    under ``backbone.``).

    Returns
    -------
    backbone : nn.Module
        In eval mode, with ``feature_dim``.
    head : nn.Module or None
        The linear head (None for BYOL); of a ``merge=heads`` student, the exposed head
        (``config["exposed_head"]``, the reference participant's). Every head is in
        ``checkpoint["model"]`` as ``heads.<k>.``.
    checkpoint : dict
        The whole checkpoint (``config`` has ``arch``, ``image_size``, ``mean``, ``std``).
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    cfg = ckpt["config"]
    backbone = create_student(cfg["arch"], image_size=cfg["image_size"], **cfg.get("arch_kwargs", {}))
    backbone.load_state_dict(_sub_state(ckpt["model"], "backbone."))
    head = None
    head_state = _sub_state(ckpt["model"], "head.")
    if not head_state and "exposed_head_index" in cfg:  # merge=heads: the exposed head
        head_state = _sub_state(ckpt["model"], f"heads.{int(cfg['exposed_head_index'])}.")
    if head_state and "weight" in head_state:
        out_dim, in_dim = head_state["weight"].shape
        head = nn.Linear(in_dim, out_dim)
        head.load_state_dict(head_state)
        head.eval()
    return backbone.eval(), head, ckpt
