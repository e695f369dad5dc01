"""The benchmark's optimized datasets, built by the product's own round engine.

Every CoOpt dataset of the benchmark is one round of the product's engine driven by
:func:`coopt_flower.engine.run_in_process`, exactly the round a Flower run performs (same
sample selection, shared subset, shards, checks, uniform values, reference, ridge maps and
streaming writer). Only the participants differ: :class:`CachedParticipant` answers from the
benchmark's feature cache instead of running its prototype again.

Rows built per seed:

- ``single:<spec>``: a round with that one prototype (it encodes every sample);
- ``CoOpt (no alignment)``: all prototypes, IID shards, targets merged as they are
  (``merge = "none"``, the ablation);
- ``CoOpt (aligned)``: the same round as the product runs it;
- ``CoOpt (heads)``: the same shards under ``merge = "heads"`` (every participant's own
  space; the student trains one head per participant);
- ``CoOpt (procrustes)`` / ``CoOpt (cca)``: the same shards under the product's other two
  alignment merges, ``merge = "align-procrustes"`` / ``"align-cca"`` (when
  ``extra_merges`` is on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from coopt_flower.config import RunSettings
from coopt_flower.dataset_format import load_optimized_dataset
from coopt_flower.engine import progress, run_in_process
from coopt_flower.engine.samples import RoundSamples
from coopt_flower.merges import Merge
from coopt_flower.projection import project, projection_matrix
from coopt_flower.protocol import Description, EncodeConfig, EncodeReply, EncodeRequest, pixels_digest
from simulations.benchmark.config import ALIGNED, CCA, HEADS, PROCRUSTES, SINGLE, UNALIGNED, Config
from simulations.benchmark.features import slug


class CachedParticipant:
    """A participant whose features of every training image are already in memory.

    Parameters
    ----------
    spec : str
        The prototype the features came from.
    features : np.ndarray
        ``(N, d)`` raw features of ``sample_ids``, row for row.
    sample_ids : np.ndarray
        Sorted ids of the seed's training images.
    shared_ids : np.ndarray
        The round's shared subset: its pixels arrive in the request, its features are
        looked up here by id (a stand-in for encoding the same images again).
    images_per_second : float
        Measured encoding throughput, reported as this participant's encode time.
    partition_id : int
        Orders the participants as Flower's simulation does.
    """

    def __init__(self, spec: str, features: np.ndarray, sample_ids: np.ndarray, shared_ids: np.ndarray,
                 images_per_second: float, image_size: int, partition_id: int) -> None:
        self.spec, self.features, self.sample_ids = spec, features, sample_ids
        self.shared_ids, self.rate = shared_ids, images_per_second
        self.image_size, self.partition_id = image_size, partition_id
        self._targets: dict[tuple[int, int], np.ndarray] = {}

    def describe(self, config: EncodeConfig) -> Description:
        dim = int(self.features.shape[1])
        return Description(prototype=self.spec, output_dim=dim, native_size=self.image_size,
                           image_size=self.image_size, device="cache", partition_id=self.partition_id)

    def _projected(self, config: EncodeConfig) -> np.ndarray:
        """Targets of every sample, projected once (as a participant encoding its whole shard)."""
        key = (config.target_dim, config.projection_seed)
        if key not in self._targets:
            matrix = projection_matrix(self.features.shape[1], config.target_dim, config.projection_seed)
            self._targets[key] = project(self.features, matrix)
        return self._targets[key]

    def encode(self, request: EncodeRequest, student=None) -> EncodeReply:
        if request.config.encoder != "own":
            raise ValueError("a cached participant has no student to encode with")
        if request.pixels is not None:
            if len(request.pixels) != len(self.shared_ids):
                raise ValueError("the shared pixels are not the shared subset this participant was given")
            ids, wanted, digest = np.full(len(self.shared_ids), -1, np.int64), self.shared_ids, \
                pixels_digest(request.pixels)
        else:
            ids = wanted = request.ids
            digest = ""
        rows = np.searchsorted(self.sample_ids, wanted)
        targets = self._projected(request.config)[rows]
        return EncodeReply(targets=targets, ids=ids, encode_seconds=len(rows) / self.rate,
                           num_images=len(rows), prototype=self.spec, encoder=self.spec,
                           pixels_sha256=digest)


def round_settings(cfg: Config, seed: int, prototypes: list[str], output_dir: Path,
                   merge: Merge = Merge.ALIGN_RIDGE, partitioner: str = "iid") -> RunSettings:
    """The run config of one benchmark round (every shard in one page, as one encode pass)."""
    settings = RunSettings(
        prototypes=list(prototypes), data=cfg.data, num_samples=cfg.num_train,
        shared_size=cfg.shared_size, target_dim=cfg.target_dim, seed=seed,
        output_dir=str(Path(output_dir).resolve()), overwrite=True, image_size=cfg.proto_image_size,
        batch_size=cfg.encode_batch_size, target_dtype=cfg.target_dtype, page_size=cfg.num_train,
        refinement="static", merge=str(merge), partitioner=partitioner)
    settings.validate()
    return settings


def dataset_dir(work_dir: Path, seed: int, row: str) -> Path:
    """Where the benchmark keeps one row's optimized dataset."""
    name = f"single-{slug(row[len(SINGLE):])}" if row.startswith(SINGLE) else slug(row)
    return progress.round_dir(Path(work_dir) / f"seed-{seed}" / name, 1)


def build_datasets(cfg: Config, seed: int, source, sample_ids: np.ndarray, feats: dict[str, np.ndarray],
                   metas: dict[str, dict], work_dir: Path, singles=None) -> dict[str, Any]:
    """The seed's single-prototype, unaligned, aligned, heads (and procrustes, cca) datasets,
    built by the round engine.

    ``feats[spec]`` holds the prototype's raw features of ``sample_ids`` (same order);
    ``singles`` the prototypes that get a single-prototype dataset (default: all of them).
    """
    def run(row: str, specs: list[str], *, merge: Merge = Merge.ALIGN_RIDGE):
        settings = round_settings(cfg, seed, specs, dataset_dir(work_dir, seed, row).parent, merge)
        drawn = RoundSamples.draw(settings, source)
        round_ids, shared_ids = drawn.ids, drawn.shared_ids
        if not np.array_equal(round_ids, sample_ids):
            raise ValueError("the round selected other samples than the benchmark encoded")
        participants = [CachedParticipant(spec, feats[spec], sample_ids, shared_ids,
                                          metas[spec]["images_per_second"],
                                      metas[spec].get("encoded_size", cfg.proto_size(spec)), k)
                        for k, spec in enumerate(specs)]
        return run_in_process(settings, source, participants)

    out: dict[str, Any] = {"datasets": {}}
    for spec in (cfg.prototypes if singles is None else singles):
        result = run(SINGLE + spec, [spec])
        out["datasets"][SINGLE + spec] = load_optimized_dataset(result.dataset_path)
    unaligned = run(UNALIGNED, list(cfg.prototypes), merge=Merge.NONE)
    out["datasets"][UNALIGNED] = load_optimized_dataset(unaligned.dataset_path)
    aligned = run(ALIGNED, list(cfg.prototypes))
    out["datasets"][ALIGNED] = load_optimized_dataset(aligned.dataset_path)
    heads = run(HEADS, list(cfg.prototypes), merge=Merge.HEADS)
    out["datasets"][HEADS] = load_optimized_dataset(heads.dataset_path)
    if cfg.extra_merges:
        for row, merge in ((PROCRUSTES, Merge.ALIGN_PROCRUSTES), (CCA, Merge.ALIGN_CCA)):
            result = run(row, list(cfg.prototypes), merge=merge)
            out["datasets"][row] = load_optimized_dataset(result.dataset_path)

    manifest = aligned.manifest
    spec_of = {p.name: p.prototype for p in manifest.participants}
    out["alignment"] = {
        "reference": manifest.reference, "reference_prototype": manifest.reference_prototype,
        "plan_seconds": manifest.timings["uniform value + alignment"],
        "participants": [
            {k: getattr(p, k) for k in ("name", "prototype", "output_dim", "image_size", "num_samples",
                                        "uniform_value", "fit_residual", "holdout_residual", "alpha",
                                        "images_per_second")}
            for p in manifest.participants],
    }
    # Encoding cost: centralized = all N images; collaborative = shard_k + S on participant k.
    shared = manifest.shared_size
    rate = {spec: metas[spec]["images_per_second"] for spec in cfg.prototypes}
    rate_cpu = {spec: metas[spec]["images_per_cpu_second"] for spec in cfg.prototypes}
    shard = {p.name: p.num_samples for p in manifest.participants}
    collab = {n: (count + shared) / rate[spec_of[n]] for n, count in shard.items()}
    collab_cpu = {n: (count + shared) / rate_cpu[spec_of[n]] for n, count in shard.items()}
    out["encoding"] = {
        "centralized_seconds": {spec: len(sample_ids) / rate[spec] for spec in cfg.prototypes},
        "collaborative_seconds": {spec_of[n]: s for n, s in collab.items()},
        "collaborative_sum_seconds": float(sum(collab.values())),
        "collaborative_max_seconds": float(max(collab.values())),
        "collaborative_sum_cpu_seconds": float(sum(collab_cpu.values())),
        "collaborative_max_cpu_seconds": float(max(collab_cpu.values())),
    }
    return out
