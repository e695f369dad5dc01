"""``merge = "multi-teacher"``: every sample gets every participant's target.

A round under ``multi-teacher`` writes what ``heads`` writes: each row's target in its owner's
own projected space, its owner in ``owners.npy``, and every participant's unaligned embeddings
of the shared subset S in ``shared_embeddings.npy``. Because every participant encoded S, a map
between *every pair* of participants can be fitted on it (ridge, as ``align-ridge`` fits
participant -> reference). The student then learns all K heads on every sample:

    head k of sample i owned by j:  exact  y_j(i)                    if k == j
                                    exact  e_k(i)                    if i is in S
                                    A_jk(y_j(i)),  weight c_jk       otherwise

``c_jk = max(0, 1 - held-out residual of A_jk)``: a map that explains little of k's space on
held-out S teaches little. Where ``heads`` trains head k only on k's shard (a quarter of the
data for four participants), here every head sees every sample, in the spirit of AM-RADIO's
multi-teacher distillation; where ``align-ridge`` keeps the reference's space only, here no
participant's space is thrown away.

The maps are fitted when the student is trained (from the dataset's own S embeddings, so the
dataset stays K times smaller than one holding every predicted target); fitting is
deterministic given the dataset and the seed. Memory: K² maps of ``n x n`` float32
(K = 4, n = 512: 16 MiB; K = 16: 256 MiB).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from coopt_flower.alignment import fit_alignment
from coopt_flower.merges import Merge

__all__ = ["PairMaps", "TeacherTargets", "fit_pair_maps"]


@dataclass
class PairMaps:
    """Ridge maps between every ordered pair of participants, fitted on S.

    Attributes
    ----------
    weight : np.ndarray
        float32 ``(K, K, n, n)``: ``y_k ~ y_j @ weight[j, k] + bias[j, k]`` (identity on the
        diagonal).
    bias : np.ndarray
        float32 ``(K, K, n)``.
    confidence : np.ndarray
        float32 ``(K, K)``: ``max(0, 1 - held-out residual)`` of each map (1 on the diagonal),
        the weight of a predicted target in the loss.
    """

    weight: np.ndarray
    bias: np.ndarray
    confidence: np.ndarray

    @property
    def num_teachers(self) -> int:
        return int(self.weight.shape[0])


def fit_pair_maps(shared: np.ndarray, *, seed: int = 0) -> PairMaps:
    """Fit ``A_jk`` for every ``j != k`` on the shared-subset embeddings.

    Parameters
    ----------
    shared : np.ndarray
        ``(K, |S|, n)``: participant ``k``'s embeddings of S, rows in the same order for all.
    seed : int
        Seeds the held-out split that picks each map's ridge strength
        (:func:`coopt_flower.alignment.fit_alignment`).
    """
    shared = np.asarray(shared, dtype=np.float32)
    if shared.ndim != 3 or shared.shape[0] < 1 or shared.shape[1] < 4:
        raise ValueError(f"multi-teacher needs (K, |S| >= 4, n) shared embeddings, got {shared.shape}")
    k, _, n = shared.shape
    weight = np.zeros((k, k, n, n), np.float32)
    bias = np.zeros((k, k, n), np.float32)
    confidence = np.eye(k, dtype=np.float32)
    for j in range(k):
        weight[j, j] = np.eye(n, dtype=np.float32)
        for t in range(k):
            if t == j:
                continue
            m = fit_alignment(shared[j], shared[t], method=Merge.ALIGN_RIDGE, seed=seed)
            weight[j, t], bias[j, t] = m.weight, m.bias
            confidence[j, t] = max(0.0, 1.0 - float(m.holdout_residual))
    return PairMaps(weight, bias, confidence)


class TeacherTargets(nn.Module):
    """Every head's target of a batch, from its rows' owner targets (buffers on one device).

    Parameters
    ----------
    maps : PairMaps
    shared : np.ndarray
        ``(K, |S|, n)``: the exact targets of S's rows for every head.
    shared_rows : np.ndarray
        ``(N,)`` int64: the S position of every dataset row, -1 for rows outside S.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    confidence: torch.Tensor
    shared: torch.Tensor
    shared_rows: torch.Tensor

    def __init__(self, maps: PairMaps, shared: np.ndarray, shared_rows: np.ndarray) -> None:
        super().__init__()
        k = maps.num_teachers
        shared = np.asarray(shared, dtype=np.float32)
        if shared.shape[0] != k or shared.shape[2] != maps.weight.shape[2]:
            raise ValueError(f"shared embeddings {shared.shape} do not match {k} teachers of dim "
                             f"{maps.weight.shape[2]}")
        self.register_buffer("weight", torch.from_numpy(maps.weight))
        self.register_buffer("bias", torch.from_numpy(maps.bias))
        self.register_buffer("confidence", torch.from_numpy(maps.confidence))
        # (|S|, K, n): a row's exact target for every head in one gather.
        self.register_buffer("shared", torch.from_numpy(np.ascontiguousarray(shared.transpose(1, 0, 2))))
        self.register_buffer("shared_rows", torch.from_numpy(np.asarray(shared_rows, dtype=np.int64)))

    @property
    def num_teachers(self) -> int:
        return int(self.weight.shape[0])

    def forward(self, targets: torch.Tensor, owners: torch.Tensor,
                rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, K, n)`` targets and ``(B, K)`` weights of a batch.

        Parameters
        ----------
        targets : Tensor
            ``(B, n)``: every row's target in its owner's space (as the dataset stores it).
        owners : Tensor
            ``(B,)`` owner index of every row.
        rows : Tensor, optional
            ``(B,)`` dataset row indices; rows in S then get every head's exact target.
        """
        device = self.weight.device
        targets = targets.detach().to(device, torch.float32)
        owners = owners.to(device, torch.long)
        out = targets.new_empty(len(targets), self.num_teachers, targets.shape[1])
        for j in torch.unique(owners).tolist():
            sel = owners == j
            # (b, n) @ (K, n, n) -> (K, b, n): every head's prediction from owner j's target.
            out[sel] = (torch.matmul(targets[sel].unsqueeze(0), self.weight[j])
                        + self.bias[j].unsqueeze(1)).transpose(0, 1)
            out[sel, j] = targets[sel]  # the owner's own target, exactly
        weights = self.confidence[owners].clone()
        if rows is not None:
            pos = self.shared_rows[rows.to(device, torch.long)]
            in_s = pos >= 0
            if bool(in_s.any()):
                out[in_s] = self.shared[pos[in_s]]
                weights[in_s] = 1.0
        return out, weights
