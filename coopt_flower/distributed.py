"""Student training across processes: ``torchrun`` + DistributedDataParallel, as PyTorch users run it.

``torchrun --nproc-per-node N -m coopt_flower.student_training ...`` (or ``coopt train`` under
torchrun, multi-node with the standard rendezvous flags) starts N processes that each hold the
preloaded dataset and train one replica; gradients are averaged by DDP (gloo on a CPU, nccl on
CUDA). Every process walks the same global batch order (the single-process run's, from the same
seeded generator) and takes its own contiguous share of every global batch, so N processes at
global batch B take the very steps one process takes at batch B:

- augmentations are drawn for the whole global batch on every process (the same generator
  state everywhere) and each keeps its share, so a sample is augmented as it would be alone;
- every share has the same size (refused otherwise, before any step), so the average of the
  processes' mean losses is the global batch's mean loss and DDP's averaged gradient is the
  single process's gradient;
- BatchNorm normalizes over a process's share: on CUDA the student's BatchNorm layers are made
  ``SyncBatchNorm`` (statistics over the global batch, as in one process); on a CPU PyTorch has
  no SyncBatchNorm, so a BatchNorm student gets per-process statistics (a warning says so)
  and only BatchNorm-free students (e.g. ``vit-tiny-4x4``) match one process closely.

Only rank 0 writes the checkpoint and the loss curve (the same format as one process) and runs
``on_epoch_end`` (the probe); every rank resumes from the same checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


class DistributedSetupError(ValueError):
    """A distributed run that cannot train as asked; the message says what to change."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in a distributed run (``world_size = 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Distributed:
        """What ``torchrun`` set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one process without them."""
        env = os.environ if env is None else env
        try:
            return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))
        except ValueError:
            raise DistributedSetupError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets "
                                        "them)") from None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> str:
        """Each process's own GPU (``cuda:<local rank>``) when CUDA is asked for; else as asked."""
        if self.active and str(requested).startswith("cuda"):
            return f"cuda:{self.local_rank}"
        return str(requested)

    def share(self, n: int) -> slice:
        """This rank's contiguous share of a global batch of ``n`` (checked by :func:`check_batches`)."""
        size = n // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)


def init_process_group(dist: Distributed, device: str) -> None:
    """Join the run's process group (nccl for CUDA, gloo otherwise), once."""
    import torch.distributed as td

    if not dist.active or td.is_initialized():
        return
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(dist.local_rank)
    td.init_process_group(backend=backend)
    logger.info("process %d of %d joined the %s process group", dist.rank, dist.world_size, backend)


def current_distribution() -> Distributed:
    """This process's place in a ``torchrun`` run whose process group is initialized; one
    process otherwise."""
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        return Distributed(td.get_rank(), td.get_world_size(), Distributed.from_env().local_rank)
    return Distributed()


def destroy_process_group() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def check_batches(num_samples: int, batch_size: int, dist: Distributed, min_batch: int = 2, *,
                  method_ok: bool = True, method: str = "this") -> None:
    """Refuse, before any step, a method that trains in one process only (``method_ok``
    False) and a run whose global batches do not split evenly over the processes.

    The last batch holds ``num_samples % batch_size`` samples (dropped below ``min_batch``).
    """
    if not dist.active:
        return
    if not method_ok:
        raise DistributedSetupError(f"{method} training runs in one process only; under torchrun coopt "
                                    "and heads students train (start it without torchrun)")
    w = dist.world_size
    if batch_size % w:
        raise DistributedSetupError(f"batch size {batch_size} does not split over {w} processes: use a "
                                    f"multiple of {w} (it is the global batch; each process takes {w}th)")
    rest = num_samples % batch_size
    if rest >= min_batch and rest % w:
        fits = [k for k in range(w, batch_size + 1, w) if num_samples % k == 0 or num_samples % k < min_batch]
        hint = f" (e.g. batch size {fits[-1]})" if fits else ""
        raise DistributedSetupError(
            f"the last batch of {num_samples} samples at batch size {batch_size} holds {rest}, which does not "
            f"split over {w} processes: choose a batch size whose last batch does{hint}, or another "
            f"number of processes")


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def wrap_model(model: nn.Module, dist: Distributed, device: torch.device) -> nn.Module:
    """``model`` as a DDP replica (SyncBatchNorm on CUDA; on a CPU a BatchNorm model is warned about)."""
    if not dist.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if has_batchnorm(model):
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif dist.is_main:
            import warnings

            warnings.warn("this student has BatchNorm layers and PyTorch has no SyncBatchNorm on a CPU: each "
                          "process normalizes over its share of the batch, so the run differs slightly from "
                          "one process", stacklevel=3)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module a DDP wrapper holds (its state dict is the single-process one)."""
    return getattr(model, "module", model)


def mean_over_processes(value: torch.Tensor, dist: Distributed) -> torch.Tensor:
    """The mean of ``value`` over every process (itself without distribution)."""
    if not dist.active:
        return value
    import torch.distributed as td

    out = value.detach().clone()
    td.all_reduce(out, op=td.ReduceOp.SUM)
    return out / dist.world_size


def barrier(dist: Distributed) -> None:
    if dist.active:
        import torch.distributed as td

        td.barrier()


def local(value: Any, dist: Distributed) -> Any:
    """This rank's share of a global batch tensor (dimension 0)."""
    return value if not dist.active else value[dist.share(len(value))]


class PeerStopped(Exception):
    """This process was stopped because another process of the run failed."""


def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` says another process of the run is gone (torchrun's SIGTERM, or a
    collective that lost its peer: gloo's ``Connection reset by peer``, an NCCL error)."""
    if isinstance(error, (PeerStopped, torch.distributed.DistError)):
        return True
    markers = ("gloo", "NCCL", "Connection reset by peer", "Connection closed by peer")
    return isinstance(error, RuntimeError) and any(marker in str(error) for marker in markers)


@contextlib.contextmanager
def stopped_by_launcher(dist: Distributed):
    """Under torchrun, turn the launcher's SIGTERM (sent to every process once one has failed)
    into :class:`PeerStopped`, so the process can say why it stops instead of dying silently."""
    if not dist.active:
        yield
        return

    def stop(signum, frame):
        raise PeerStopped("torchrun stopped this process: another process of the run failed")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
