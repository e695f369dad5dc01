"""Multi-round CoOpt: the student trained on round r's data becomes a prototype in round r+1.

Refinement policies (run config ``refinement``):

``static``
    The control: no student is sent; every round uses the participants' own prototypes.
``join``
    The student joins the pool as a reference candidate. Participants keep encoding with
    their own prototypes; if the student is the most uniform, everyone is aligned to its space.
``switch``
    Participants whose own prototype scores worse (higher uniform value) than the student
    encode their shard with the student instead; the reference is the most uniform of all.
``distill``
    Knowledge flows back: every participant refines its own prototype towards the student on
    a sample of its shard and S, on its own node (:mod:`coopt_flower.distill`), and encodes
    the round with the refined prototype. The student is no reference candidate.

Who encodes with the student is decided in the round's plan
(:func:`coopt_flower.engine.plan.choose_encoders`); the student itself (trained on a round's
dataset, packed for transport, rebuilt on a participant) is :mod:`coopt_flower.round_student`'s.
Here: the policies, and how far two participants' embeddings by the same student may differ.
"""

from __future__ import annotations

import numpy as np

REFINEMENT_POLICIES = ("static", "join", "switch", "distill")


# How far two nodes' embeddings of S by the same student may differ, as the relative Frobenius
# norm of the difference, by the least precise arithmetic either used: float32 on a CPU is
# reproducible to rounding; CUDA float32 may use TF32 matmuls (10-bit mantissa) in cuDNN; bf16
# / fp16 autocast keep 8 / 11 bits. A corrupted student differs by tens of percent.
EMBEDDING_TOLERANCES = {"cpu-fp32": 1e-3, "gpu-fp32": 1e-2, "fp16": 3e-2, "bf16": 5e-2}


def embedding_tolerance(precision: str, device: str) -> float:
    """The relative tolerance for one node's arithmetic (see :data:`EMBEDDING_TOLERANCES`)."""
    if precision in ("bf16", "fp16") and not str(device).startswith("cpu"):
        return EMBEDDING_TOLERANCES[precision]
    return EMBEDDING_TOLERANCES["cpu-fp32" if str(device).startswith("cpu") else "gpu-fp32"]


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """``||a - b|| / ||b||`` (Frobenius), the measure the tolerances above bound."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))
