"""The benchmark's validation split: labeled images every choice is made on, never the test set.

Recipes, the single-prototype row, when BYOL has converged: each is decided on a validation
split carved from the *training* images, so the test set is read only for the numbers that
are reported. The split must not overlap any seed's training sample, whichever seeds an
invocation runs (seeds run by separate invocations are combined into one report, and must
have decided on the same images): it is drawn, seeded, from the training images that none of
the benchmark's reportable seeds (:data:`RESERVED_SEEDS`) selects, so it is a function of the
training set's size, ``num_train``, ``num_val`` and ``val_seed`` alone. A run with a seed
outside them is checked: a sample that overlaps the split is refused.
"""

from __future__ import annotations

import numpy as np

from coopt_flower.data import select_samples

#: The seeds whose training samples the validation split avoids (the issue's 5 seeds).
RESERVED_SEEDS = tuple(range(5))


def validation_ids(train_size: int, num_train: int, num_val: int, val_seed: int) -> np.ndarray:
    """Sorted ids of the validation images (empty when ``num_val`` is 0)."""
    if num_val <= 0:
        return np.empty(0, np.int64)
    taken = np.unique(np.concatenate([select_samples(train_size, num_train, s) for s in RESERVED_SEEDS]))
    free = np.setdiff1d(np.arange(train_size, dtype=np.int64), taken)
    if len(free) < num_val:
        raise ValueError(f"num_val={num_val}: only {len(free)} training images are outside every "
                         f"reportable seed's sample of {num_train}; lower num_val or num_train")
    rng = np.random.default_rng([int(val_seed), 0x7A1])
    return np.sort(rng.choice(free, size=num_val, replace=False)).astype(np.int64)


def check_disjoint(val_ids: np.ndarray, sample_ids: np.ndarray, seed: int) -> None:
    """Refuse a seed whose training sample holds validation images."""
    shared = np.intersect1d(val_ids, sample_ids)
    if len(shared):
        raise ValueError(f"seed {seed}'s training sample holds {len(shared)} validation images: "
                         f"validation is drawn outside seeds {RESERVED_SEEDS[0]}-{RESERVED_SEEDS[-1]}; "
                         "use one of them or num_val=0")


def private_ids(train_size: int, num_train: int, num_val: int, val_seed: int, num_private: int,
                private_seed: int = 0) -> np.ndarray:
    """Sorted ids of a participant's *private* labeled images: outside every reportable seed's
    training sample and outside the validation split (and the test images are another split),
    so an in-house prototype trained on them has seen no image any reported number uses."""
    taken = np.unique(np.concatenate([select_samples(train_size, num_train, s) for s in RESERVED_SEEDS]
                                     + [validation_ids(train_size, num_train, num_val, val_seed)]))
    free = np.setdiff1d(np.arange(train_size, dtype=np.int64), taken)
    if len(free) < num_private:
        raise ValueError(f"num_private={num_private}: only {len(free)} training images are outside every "
                         "reportable seed's sample and the validation split")
    rng = np.random.default_rng([int(private_seed), 0x9E7])
    return np.sort(rng.choice(free, size=num_private, replace=False)).astype(np.int64)
