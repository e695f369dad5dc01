"""Offline linear probe: how good are a frozen model's features?

The protocol of ReLA / CoOpt: freeze the backbone, extract features once
without augmentation, train one ``nn.Linear`` with Adam (lr 3e-4) on the labeled
train split, and report the test accuracy as the mean of the last three epochs
(reported numbers: mean +- sample std over seeds, see :func:`mean_std`).

Features are standardized with the train split's statistics first: features of
different models (or raw pixels) live on very different scales, and without it a
fixed learning rate would favor some of them.

Everything stays in memory; an epoch over a few thousand samples is a handful
of matrix products, so probes take well under a second on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coopt_flower.augment import IMAGENET_MEAN, IMAGENET_STD, EvalTransform
from coopt_flower.images import as_nchw_images

__all__ = [
    "ProbeResult",
    "default_probe_epochs",
    "extract_features",
    "linear_probe",
    "mean_std",
    "probe_backbone",
    "probe_checkpoint",
    "probe_steps_per_epoch",
]


@dataclass
class ProbeResult:
    """Result of one linear probe.

    Attributes
    ----------
    accuracy : float
        Test accuracy, mean of the last ``last_k`` epochs.
    test_accuracies : list of float
        Test accuracy after every epoch.
    train_accuracy : float
        Train accuracy after the last epoch (how well the probe fits; computed
        once, since per-epoch train passes cost as much as the test passes).
    epochs, seed : int
    other_accuracy : dict
        The same probe's accuracy on each further evaluation set (``also_evaluate``), mean
        of the last ``last_k`` epochs: e.g. a validation split that choices are made on,
        read by the very classifier whose test accuracy is reported.
    test_correct : np.ndarray
        Whether the last epoch's classifier got each test sample right (bool): the per-sample
        outcome intervals over test images are bootstrapped from.
    other_correct : dict of np.ndarray
        The same for each further evaluation set (e.g. per-class accuracy on a validation split
        from the very classifier whose test outcomes are reported).
    """

    accuracy: float
    test_accuracies: list[float]
    train_accuracy: float = float("nan")
    epochs: int = 0
    seed: int = 0
    other_accuracy: dict[str, float] = field(default_factory=dict)
    test_correct: Optional[np.ndarray] = None  # per test sample: the last epoch's prediction right?
    other_correct: dict[str, np.ndarray] = field(default_factory=dict)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``, the estimate over seeds a reader
    expects), e.g. of probe accuracies over seeds; the std of one value is 0."""
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def probe_steps_per_epoch(num_samples: int, batch_size: int = 256) -> int:
    """Optimizer steps of one probe epoch over ``num_samples`` features (``batch_size`` 0 or
    >= ``num_samples``: one full-batch step)."""
    bs = num_samples if batch_size <= 0 or batch_size >= num_samples else batch_size
    return math.ceil(num_samples / bs)


def default_probe_epochs(num_samples: int, batch_size: int = 256, min_steps: int = 3000) -> int:
    """The epochs :func:`linear_probe` runs when not given any: at least 100, and enough for
    ``min_steps`` optimizer steps (the probe's accuracy depends on its number of steps)."""
    return max(100, math.ceil(min_steps / probe_steps_per_epoch(num_samples, batch_size)))


@torch.inference_mode()
def extract_features(
    backbone: nn.Module,
    images: Any,
    *,
    image_size: Optional[int] = None,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Features of ``images`` from a frozen backbone, without augmentation.

    Parameters
    ----------
    backbone : nn.Module
        Maps ``(B, 3, S, S)`` floats to ``(B, d)``. Run in eval mode (BatchNorm
        uses its running statistics); its previous mode is restored.
    images : uint8 tensor or array
        ``(N, C, H, W)`` or ``(N, H, W, C)``, C = 1 or 3.
    image_size : int, optional
        Resize (antialiased) + center-crop to this size; default: the images' width.
    batch_size : int
    device : str or torch.device
        Where the backbone runs; features are returned on the CPU.
    mean, std : sequence of float
        Normalization, the same as in training.

    Returns
    -------
    Tensor
        float32 ``(N, d)`` on the CPU.
    """
    # Any dtype (EvalTransform scales uint8 and takes floats as they are), and an NHWC input
    # stays a strided view: the transform sees the memory layout it always saw.
    x = as_nchw_images(images, uint8_only=False, contiguous=False)
    transform = EvalTransform(int(image_size or x.shape[-1]), mean=mean, std=std)
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval()
    try:
        out = []
        for start in range(0, len(x), batch_size):
            batch = transform(x[start : start + batch_size].to(device))
            feats = backbone(batch)
            out.append(feats.reshape(len(feats), -1).float().cpu())
    finally:
        backbone.train(was_training)
    if not out:
        raise ValueError("no images to extract features from")
    return torch.cat(out)


def _as_float_matrix(a: Any) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.array(a))
    t = t.detach().cpu()
    if t.dtype == torch.uint8:
        # Raw pixels: standardization makes the 1/255 scale irrelevant, but keep
        # the values in a familiar range.
        t = t.float() / 255.0
    return t.reshape(len(t), -1).float()


def _as_labels(a: Any) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().long().reshape(-1)
    # np.array (not asarray) copies: read-only memory maps cannot back a tensor.
    return torch.from_numpy(np.array(a, dtype=np.int64)).reshape(-1)


def linear_probe(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    test_labels: Any,
    *,
    epochs: Optional[int] = None,
    lr: float = 3e-4,
    seed: int = 0,
    batch_size: int = 256,
    num_classes: Optional[int] = None,
    last_k: int = 3,
    device: str | torch.device = "cpu",
    num_threads: Optional[int] = 1,
    min_steps: int = 3000,
    also_evaluate: Optional[Mapping[str, tuple[Any, Any]]] = None,
) -> ProbeResult:
    """Train ``nn.Linear`` on frozen features with Adam and report test accuracy.

    Parameters
    ----------
    train_feats, test_feats : array or tensor
        ``(N, ...)`` features (flattened); uint8 inputs are scaled to [0, 1].
    train_labels, test_labels : int array or tensor
        ``(N,)`` class indices.
    epochs : int, optional
        Passes over the train features. Default: at least 100, and enough for
        ``min_steps`` optimizer steps. With Adam at lr 3e-4 the probe's accuracy
        depends on the number of *steps*: on 2000 Fashion-MNIST images (8 steps
        an epoch) 100 epochs left random-student features ~3 points short of
        convergence, reached after ~2500-3000 steps.
    lr : float
        Adam learning rate (3e-4 as in ReLA).
    seed : int
        Seeds the classifier's initialization and the shuffling.
    batch_size : int
        Minibatch size; ``0`` or a value >= N means full-batch steps.
    num_classes : int, optional
        Defaults to ``max(labels) + 1`` over both splits.
    last_k : int
        The reported accuracy is the mean over the last ``last_k`` epochs.
    device : str or torch.device
    min_steps : int
        Minimum number of optimizer steps when ``epochs`` is None.
    also_evaluate : mapping, optional
        ``name -> (features, labels)`` of further evaluation sets (a validation split):
        the same classifier is evaluated on each after every epoch, and
        ``ProbeResult.other_accuracy[name]`` holds its mean over the last ``last_k``. Its
        training (and so the test accuracy) is the same with or without them.
    num_threads : int or None
        CPU threads for the probe (restored afterwards); None keeps torch's
        setting. The probe's matrices are small (N x d times d x classes), and
        on a busy 2-core machine two threads were measured ~3x *slower* than one
        (threads wait on each other at every tiny GEMM).

    Returns
    -------
    ProbeResult
    """
    device = torch.device(device)
    if device.type == "cpu" and num_threads is not None and num_threads != torch.get_num_threads():
        previous = torch.get_num_threads()
        torch.set_num_threads(num_threads)
        try:
            return _linear_probe(train_feats, train_labels, test_feats, test_labels, epochs=epochs,
                                 lr=lr, seed=seed, batch_size=batch_size,
                                 num_classes=num_classes, last_k=last_k, device=device,
                                 min_steps=min_steps, also_evaluate=also_evaluate)
        finally:
            torch.set_num_threads(previous)
    return _linear_probe(train_feats, train_labels, test_feats, test_labels, epochs=epochs,
                         lr=lr, seed=seed, batch_size=batch_size, num_classes=num_classes,
                         last_k=last_k, device=device, min_steps=min_steps, also_evaluate=also_evaluate)


def _linear_probe(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    test_labels: Any,
    *,
    epochs: Optional[int],
    lr: float,
    seed: int,
    batch_size: int,
    num_classes: Optional[int],
    last_k: int,
    device: torch.device,
    min_steps: int,
    also_evaluate: Optional[Mapping[str, tuple[Any, Any]]] = None,
) -> ProbeResult:
    xtr = _as_float_matrix(train_feats)
    xte = _as_float_matrix(test_feats)
    ytr = _as_labels(train_labels)
    yte = _as_labels(test_labels)
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise ValueError("features and labels differ in length")
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"train features have {xtr.shape[1]} dims, test {xte.shape[1]}")
    n = len(xtr)
    bs = n if batch_size <= 0 or batch_size >= n else batch_size
    if epochs is None:
        epochs = default_probe_epochs(n, batch_size, min_steps)
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    num_classes = int(num_classes or int(max(ytr.max(), yte.max())) + 1)
    # Standardize with the train split only (the test split must not leak in).
    mu = xtr.mean(0, keepdim=True)
    sd = xtr.std(0, keepdim=True).clamp_min(1e-6)
    xtr = ((xtr - mu) / sd).to(device)
    xte = ((xte - mu) / sd).to(device)
    ytr, yte = ytr.to(device), yte.to(device)
    others = {name: (((_as_float_matrix(f) - mu) / sd).to(device), _as_labels(y).to(device))
              for name, (f, y) in (also_evaluate or {}).items()}
    for name, (xo, yo) in others.items():
        if len(xo) != len(yo) or xo.shape[1] != xtr.shape[1]:
            raise ValueError(f"evaluation set {name!r}: {len(xo)} features of {xo.shape[1]} dims for "
                             f"{len(yo)} labels; the train features have {xtr.shape[1]} dims")

    gen = torch.Generator().manual_seed(int(seed))
    clf = nn.Linear(xtr.shape[1], num_classes)
    # Seeded init without touching the global RNG.
    with torch.no_grad():
        bound = 1.0 / np.sqrt(xtr.shape[1])
        clf.weight.uniform_(-bound, bound, generator=gen)
        clf.bias.uniform_(-bound, bound, generator=gen)
    clf = clf.to(device)
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    test_accs: list[float] = []
    other_accs: dict[str, list[float]] = {name: [] for name in others}
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            loss = F.cross_entropy(clf(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            test_accs.append(float((clf(xte).argmax(1) == yte).float().mean()))
            for name, (xo, yo) in others.items():
                other_accs[name].append(float((clf(xo).argmax(1) == yo).float().mean()))
    with torch.no_grad():
        train_acc = float((clf(xtr).argmax(1) == ytr).float().mean())
        test_correct = (clf(xte).argmax(1) == yte).cpu().numpy()
        other_correct = {name: (clf(xo).argmax(1) == yo).cpu().numpy() for name, (xo, yo) in others.items()}
    k = max(1, min(last_k, epochs))
    return ProbeResult(
        accuracy=float(np.mean(test_accs[-k:])), test_accuracies=test_accs,
        train_accuracy=train_acc, epochs=epochs, seed=int(seed),
        other_accuracy={name: float(np.mean(accs[-k:])) for name, accs in other_accs.items()},
        test_correct=test_correct, other_correct=other_correct,
    )


# Keyword arguments of probe_backbone that configure the feature extraction; the
# others configure the probe.
_EXTRACTION_KEYS = ("image_size", "device", "mean", "std")


def probe_backbone(
    backbone: nn.Module,
    train_images: Any,
    train_labels: Any,
    test_images: Any,
    test_labels: Any,
    *,
    feature_batch_size: int = 512,
    **kwargs: Any,
) -> ProbeResult:
    """Extract features of both splits with a frozen backbone and probe them.

    Parameters
    ----------
    backbone : nn.Module
    train_images, test_images : uint8 tensor or array
        As in :func:`extract_features`.
    train_labels, test_labels : int array or tensor
    feature_batch_size : int
        Batch size of the extraction.
    **kwargs
        ``image_size``, ``device``, ``mean`` and ``std`` go to :func:`extract_features`
        (same defaults; ``device`` is only used for extraction, the probe runs on the
        CPU-side features); everything else to :func:`linear_probe` (``epochs``,
        ``lr``, ``seed``, ``batch_size``, ...).
    """
    extraction = {k: kwargs.pop(k) for k in _EXTRACTION_KEYS if k in kwargs}
    train_feats = extract_features(backbone, train_images, batch_size=feature_batch_size, **extraction)
    test_feats = extract_features(backbone, test_images, batch_size=feature_batch_size, **extraction)
    return linear_probe(train_feats, train_labels, test_feats, test_labels, **kwargs)


def probe_checkpoint(
    checkpoint: str,
    train_data: str = "fashion-mnist",
    test_data: str = "fashion-mnist:test",
    *,
    train_samples: int = 2000,
    test_samples: int = 1000,
    seeds: int = 3,
    epochs: Optional[int] = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Linear-probe a trained student (``last.pt``) on labeled image sources.

    The backbone is rebuilt with :func:`coopt_flower.checkpoints.load_student` and probed
    at its training resolution and normalization; ``train_samples`` / ``test_samples`` are
    drawn with :func:`coopt_flower.data.select_samples` (seed 0; 0 = all).

    Returns
    -------
    dict
        ``accuracy`` and ``accuracy_std`` (over ``seeds`` probe seeds), the per-seed
        ``accuracies`` and what was probed.
    """
    from coopt_flower.checkpoints import load_student
    from coopt_flower.data import open_source, select_samples

    backbone, _, ckpt = load_student(checkpoint)
    config = ckpt["config"]
    splits = []
    for spec, count in ((train_data, train_samples), (test_data, test_samples)):
        source = open_source(spec)
        ids = select_samples(len(source), count, seed=0)
        labels = source.labels(ids)
        if labels is None:
            raise ValueError(f"{spec!r} has no labels; a linear probe needs labeled data")
        splits.append((source.images(ids), labels))
    (x_train, y_train), (x_test, y_test) = splits
    train_feats = extract_features(backbone, x_train, image_size=config["image_size"], device=device,
                                   mean=config["mean"], std=config["std"])
    test_feats = extract_features(backbone, x_test, image_size=config["image_size"], device=device,
                                  mean=config["mean"], std=config["std"])
    accuracies = [linear_probe(train_feats, y_train, test_feats, y_test, epochs=epochs, seed=s).accuracy
                  for s in range(seeds)]
    accuracy, spread = mean_std(accuracies)
    return {"checkpoint": str(checkpoint), "arch": config["arch"], "train_data": train_data,
            "test_data": test_data, "train_samples": len(y_train), "test_samples": len(y_test),
            "accuracy": accuracy, "accuracy_std": spread, "accuracies": accuracies}
