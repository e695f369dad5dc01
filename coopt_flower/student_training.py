"""Train any student on an optimized dataset (and the supervised ceiling).

CoOpt's student objective (from ReLA): for an image ``x`` with target ``y``,

    loss = 1 - cos(head(backbone(aug(x))), z(y)),

averaged over two augmented views, where ``z`` is the per-dimension z-score of
the targets over the whole dataset (:class:`coopt_flower.losses.CoOptLoss`).
AdamW, lr 1e-3, weight decay 0.01.

:func:`train_supervised` trains the same student with a linear classifier and
cross-entropy, with the same augmentations, views and optimizer: the ceiling that
benchmarks show next to CoOpt and BYOL (:func:`coopt_flower.byol.train_byol`).
Both take the data plus a :class:`~coopt_flower.training_loop.TrainConfig` and run the
loop of :mod:`coopt_flower.training_loop`; both return a
:class:`~coopt_flower.training_loop.TrainResult`.

Checkpoints (``last.pt``, written atomically every epoch; see
:mod:`coopt_flower.checkpoints`) hold the model and optimizer state, the run record
and the z-score statistics, so a run can resume (``resume=True``) and a trained
student can be reloaded with :func:`load_student`.

Command line::

    python -m coopt_flower.student_training --dataset DIR --arch small-cnn --epochs 10 --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from coopt_flower.checkpoints import CHECKPOINT_NAME, LOSS_CURVE_NAME, load_checkpoint, load_student
from coopt_flower.devices import default_device
from coopt_flower.heads import is_heads_dataset, train_on_heads
from coopt_flower.help_format import DefaultsHelpFormatter
from coopt_flower.manifest import Manifest
from coopt_flower.images import as_nchw_images
from coopt_flower.inputs import loader_order_batches, on_device, preload_dataset
from coopt_flower.losses import CoOptLoss
from coopt_flower.students import StudentWithHead
from coopt_flower.target_statistics import target_stats
from coopt_flower.training_loop import (
    VIEWS,
    EpochCallback,
    Recipe,
    TrainConfig,
    TrainResult,
    fit,
    num_batches,
    tensor_batches,
)

__all__ = [
    "CHECKPOINT_NAME",
    "LOSS_CURVE_NAME",
    "TrainConfig",
    "load_checkpoint",
    "load_student",
    "main",
    "train_on_optimized",
    "train_supervised",
]


# ---------------------------------------------------------------------------
# CoOpt: train on an optimized dataset
# ---------------------------------------------------------------------------


def train_on_optimized(
    dataset: Dataset,
    config: Optional[TrainConfig] = None,
    *,
    on_epoch_end: Optional[EpochCallback] = None,
) -> TrainResult:
    """Train a student to predict the (z-scored) targets of an optimized dataset.

    Parameters
    ----------
    dataset : Dataset
        Items ``(image, target)``: ``image`` uint8 ``(C, H, W)`` (C = 1 or 3),
        ``target`` float ``(n,)``. An ``OptimizedDataset`` or a ``TensorDataset``.
    config : TrainConfig, optional
        Shared settings (defaults: ``TrainConfig()``); ``image_size`` defaults to the
        dataset's image width, ``num_workers`` sets the DataLoader's workers.
    on_epoch_end : callable, optional
        ``on_epoch_end(epoch, backbone)`` after every epoch (e.g. a linear probe);
        return values are collected in ``TrainResult.epoch_metrics``.

    Returns
    -------
    TrainResult
        With the z-score statistics in ``target_stats`` (also in the checkpoint as
        ``target_mean`` and ``target_std``).

    A dataset whose manifest says ``merge: heads`` is trained with one head per participant
    (:func:`coopt_flower.heads.train_on_heads`).
    """
    if is_heads_dataset(dataset):  # targets in per-participant spaces: one head per participant
        return train_on_heads(dataset, config, on_epoch_end=on_epoch_end)
    config = config or TrainConfig()
    if len(dataset) < 2:
        raise ValueError("need at least 2 samples to train")
    device = torch.device(config.device)
    stats = target_stats(dataset, num_workers=config.num_workers)
    target_dim = int(stats.mean.numel())
    criterion = CoOptLoss(stats.mean, stats.std).to(device)
    batch_size = config.batch_size
    arrays = preload_dataset(dataset, config.device, progress=config.progress) if config.preload else None

    if arrays is not None:
        images, targets = arrays

        def batches(gen: torch.Generator) -> Iterable[Any]:
            return loader_order_batches(len(dataset), batch_size, gen)

        def loss(model: nn.Module, idx: torch.Tensor, views) -> torch.Tensor:
            idx = idx.to(images.device)
            return criterion(model(views(images[idx])), targets[views.local(idx)].to(device, torch.float32))
    else:
        def batches(gen: torch.Generator) -> Iterable[Any]:
            # drop_last only when the remainder is a single sample (BatchNorm).
            return DataLoader(
                dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) % batch_size == 1,
                generator=gen, num_workers=config.num_workers, pin_memory=device.type == "cuda",
            )

        def loss(model: nn.Module, batch: Any, views) -> torch.Tensor:
            images_b, targets_b = batch
            return criterion(model(views(images_b)),
                             views.local(targets_b).to(device, torch.float32, non_blocking=True))

    recipe = Recipe(
        method="coopt", wrap=lambda backbone: StudentWithHead(backbone, target_dim),
        batches=batches, steps_per_epoch=num_batches(len(dataset), batch_size), loss=loss,
        # The dataset's image width, read only when the config does not set a size.
        image_size=config.image_size or int(dataset[0][0].shape[-1]), num_samples=len(dataset),
        settings={"target_dim": target_dim},
        extra_state={"target_mean": stats.mean, "target_std": stats.std}, distributed=True,
    )
    return TrainResult(**fit(recipe, config, on_epoch_end=on_epoch_end).fields(), target_stats=stats)


# ---------------------------------------------------------------------------
# Supervised ceiling
# ---------------------------------------------------------------------------


def train_supervised(
    images: Any,
    labels: Any,
    config: Optional[TrainConfig] = None,
    *,
    num_classes: Optional[int] = None,
    on_epoch_end: Optional[EpochCallback] = None,
) -> TrainResult:
    """The supervised ceiling: same student, augmentations and optimizer, cross-entropy.

    Like CoOpt training, every step uses two augmented views of the batch (the
    loss is their mean), so an epoch costs the same compute for all methods.

    Parameters
    ----------
    images : uint8 array or tensor
        ``(N, C, H, W)`` or ``(N, H, W, C)``, kept in memory.
    labels : int array or tensor
        ``(N,)`` class indices.
    config : TrainConfig, optional
        As in :func:`train_on_optimized`.
    num_classes : int, optional
        Defaults to ``max(labels) + 1``.
    on_epoch_end : callable, optional
        As in :func:`train_on_optimized`.
    """
    config = config or TrainConfig()
    x = as_nchw_images(images)
    y = labels.long() if isinstance(labels, torch.Tensor) else torch.from_numpy(np.array(labels, dtype=np.int64))
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    num_classes = int(num_classes or int(y.max()) + 1)
    x, y = on_device(x, config.device), on_device(y, config.device)

    def loss(model: nn.Module, idx: torch.Tensor, views) -> torch.Tensor:
        idx = idx.to(x.device)
        return F.cross_entropy(model(views(x[idx])), torch.cat([y[idx]] * VIEWS))

    recipe = Recipe(
        method="supervised", wrap=lambda backbone: StudentWithHead(backbone, num_classes),
        batches=lambda gen: tensor_batches(len(x), config.batch_size, gen),
        steps_per_epoch=num_batches(len(x), config.batch_size), loss=loss,
        image_size=int(x.shape[-1]), num_samples=len(x), settings={"num_classes": num_classes},
    )
    return TrainResult(**fit(recipe, config, on_epoch_end=on_epoch_end).fields())


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


#: How the command line names itself in its help (``coopt train`` passes its own).
PROG = "python -m coopt_flower.student_training"


def _parse_args(argv: Optional[Sequence[str]], prog: str = PROG) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        formatter_class=DefaultsHelpFormatter,
        prog=prog,
        description="Train a student on a CoOpt optimized dataset.",
    )
    p.add_argument("--dataset", default=None,
                   help="optimized dataset: a round directory or an export (hf / webdataset); "
                        "required unless --shards names the shards")
    p.add_argument("--out", required=True, help="output directory (checkpoint, loss curve)")
    p.add_argument("--arch", default="small-cnn",
                   help="student: small-cnn, resnet18-small, torchvision:<name>, timm:<name>")
    p.add_argument("--epochs", type=int, default=10, help="passes over the dataset")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size of the student (default: the dataset's image size)")
    p.add_argument("--batch-size", type=int, default=256, help="samples per step")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    p.add_argument("--seed", type=int, default=0, help="initialization and shuffling seed")
    p.add_argument("--device", default=default_device(), help="cpu or cuda[:i] (this machine's best)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--source", default=None,
                   help="image source spec, if not the one recorded in the dataset's manifest")
    p.add_argument("--no-verify", action="store_true", help="skip the dataset checksum check")
    p.add_argument("--stream", action="store_true",
                   help="stream a webdataset export's shards (shuffle buffer, shards split over torchrun "
                        "processes and workers) instead of reading it by random access")
    p.add_argument("--shards", default=None, metavar="URLS",
                   help="stream these shards instead of --dataset's: paths, http(s):// or pipe:COMMAND "
                        "URLs, separated by '::', with {000000..000009} ranges (implies --stream)")
    p.add_argument("--shuffle-buffer", type=int, default=2000, help="samples held for shuffling a stream")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress line")
    args = p.parse_args(argv)
    if args.dataset is None and args.shards is None:
        p.error("the following arguments are required: --dataset (or --shards)")
    return args


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """Entry point of ``python -m coopt_flower.student_training`` (and ``coopt train``)."""
    args = _parse_args(argv, prog)
    # One line per epoch on stderr, unless the user asked for quiet.
    logging.basicConfig(level=logging.WARNING if args.no_progress else logging.INFO,
                        format="%(message)s")
    # Imported here so that this module stays importable (and testable) on its own.
    from coopt_flower.dataset_format import load_optimized_dataset

    if args.dataset is not None and os.path.isfile(os.path.join(args.dataset, "coopt_export.json")):
        # An export (`coopt export`: hf / webdataset) rather than a round directory.
        from coopt_flower.exported import open_dataset as load_optimized_dataset

        from pathlib import Path

        copy = Path(args.dataset) / "coopt_manifest.json"  # the round's manifest, as exported
        if copy.is_file() and Manifest.from_json(json.loads(copy.read_text(encoding="utf-8"))).is_heads:
            # One head on targets that live in several spaces would train silently wrong.
            print(f"{args.dataset}: a merge=heads export cannot be trained yet (its targets live in "
                  "one space per participant); train its round directory instead", file=sys.stderr)
            return 2
    from coopt_flower.distributed import Distributed, DistributedSetupError, destroy_process_group, \
        init_process_group, is_peer_failure, stopped_by_launcher

    # Under torchrun (RANK / WORLD_SIZE set) every process trains one DDP replica.
    dist = Distributed.from_env()
    device = dist.device(args.device)
    stream = args.stream or args.shards is not None
    if stream:
        from coopt_flower.exported import verify_export
        from coopt_flower.stream_training import train_on_stream
        from coopt_flower.streaming import StreamSpec

        if args.shards is not None:
            spec = StreamSpec.from_urls(args.shards)
        else:
            if not args.no_verify:
                verify_export(args.dataset)
            spec = StreamSpec.from_export(args.dataset)
    else:
        dataset = load_optimized_dataset(args.dataset, source=args.source, verify=not args.no_verify)
    config = TrainConfig(
        arch=args.arch, image_size=args.image_size, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        seed=args.seed, device=device, checkpoint_dir=args.out, resume=args.resume,
        progress=not args.no_progress and dist.is_main, num_workers=args.num_workers,
    )
    init_process_group(dist, device)
    try:
        with stopped_by_launcher(dist):
            if stream:
                result = train_on_stream(spec, config, shuffle_buffer=args.shuffle_buffer)
            else:
                result = train_on_optimized(dataset, config)
    except DistributedSetupError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 (a peer's death, said in one line; anything else raises)
        if not (dist.active and is_peer_failure(error)):
            raise
        cause = _first_sentence(str(error)) or type(error).__name__
        print(f"{prog}: rank {dist.rank} stopped: another process of this torchrun run failed ({cause}); "
              f"{resume_hint(args.out, args.epochs)}", file=sys.stderr)
        return 1
    finally:
        try:
            destroy_process_group()
        except Exception:  # noqa: BLE001 (the group may have lost a member)
            pass
    if not dist.is_main:
        return 0
    summary = {
        "checkpoint": str(result.checkpoint_path),
        "loss_curve": str(result.loss_curve_path),
        "losses": result.losses,
        "epoch_times_s": result.epoch_times,
        "train_time_s": result.train_time,
    }
    print(json.dumps(summary, indent=2))
    return 0


def _first_sentence(text: str) -> str:
    """The first sentence of an error, without a ``[file.cc:123]`` prefix (gloo's messages)."""
    text = text.strip().splitlines()[0] if text.strip() else ""
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". ", 1)[0][:200]


def resume_hint(out: str, epochs: int) -> str:
    """What a rerun can continue from: ``out``'s last complete checkpoint (written atomically
    at the end of each epoch, by rank 0), or nothing."""
    path = os.path.join(out, CHECKPOINT_NAME)
    try:
        epoch = int(load_checkpoint(path)["epoch"])
    except (OSError, KeyError, ValueError, RuntimeError):
        return f"no complete checkpoint in {out}: run the same command again"
    return (f"{path} holds epoch {epoch} of {epochs}, complete: run the same command with --resume "
            "to continue from it")


if __name__ == "__main__":
    raise SystemExit(main())
