"""Benchmark: CoOpt (with and without alignment) vs BYOL at an equal training budget.

Fashion-MNIST, side by side, several seeds, the same student, augmentations, batch size,
optimizer and epoch budget for every trained row:

- floors and ceiling: raw pixels, a random-init student, each prototype's own features,
  a supervised student (labels, :func:`coopt_flower.student_training.train_supervised`);
- BYOL (:func:`coopt_flower.byol.train_byol`, momentum 0.99 -> 1.0 on a cosine schedule);
- each prototype alone (centralized: targets = that prototype's projected features of
  every training image);
- CoOpt without alignment (K IID shards, each participant's projected targets merged as is);
- CoOpt with alignment (same shards; shared subset S, reference = lowest uniform value,
  ridge maps applied: :func:`coopt_flower.alignment.plan_alignment`);
- CoOpt (heads) (same shards, ``merge = "heads"``: no alignment, the student trains one
  head per participant, :mod:`coopt_flower.heads`), first student only;
- CoOpt (procrustes) and CoOpt (cca) (same shards, ``merge = "align-procrustes"`` /
  ``"align-cca"``, the product's other two alignment merges), first student only;
- CoOpt with alignment and BYOL again for a second student architecture.

For a run that must fit a time limit, ``arch2: ""`` drops the second student,
``single_rows: best`` keeps one single-prototype row (the prototype whose own features probe
highest, from the floors every run computes) and ``extra_merges: false`` drops the procrustes
and cca rows; the defaults run everything. Rows run most important first, every finished
training run is stored in ``<work-dir>/runs`` (``--resume`` reuses it) and the JSON, Markdown
and plot are rewritten after every finished row, so a run cut short still leaves a report of
what finished, with what did not listed as not run (``--report-only`` re-renders it).

The CoOpt datasets are built by the product's own round engine
(:func:`coopt_flower.engine.run_round`, driven in-process by
:func:`coopt_flower.engine.run_in_process`: the round a Flower run performs) with
participants that answer from the feature cache (:mod:`simulations.benchmark.datasets`), and
read back with :func:`~coopt_flower.dataset_format.load_optimized_dataset` for training: the
students train on real optimized datasets, exactly as a user would.

Every training image is encoded once per prototype (no augmentation, the prototype's own
preprocessing, batch 128 as in the platform) and cached as ``.npy`` under ``--cache-dir``
(memory-mapped); every target set is derived from that cache. The measured throughput is
CoOpt's one-off encoding cost: a centralized single prototype encodes all N images; in the
collaborative setting participant k encodes its shard plus S, on its own machine, so the
wall-clock cost is the max over participants (the sum is the total compute).

Sizes and every other setting come from a YAML file (``--config``). The default,
``simulations/configs/benchmark.yaml``, is the real budget: 10,000 training images per seed,
the full 10,000-image test set, 10 epochs, 3 seeds, a BYOL row trained 3x longer, students
``small-cnn`` and ``torchvision:resnet18``; ``benchmark-small.yaml`` is the 2,000-image,
5-epoch budget behind the committed results. Single keys can be overridden on the command
line; the results name the file that produced them. ``--resume`` reuses every finished
training run of an interrupted invocation.

After every epoch the student is probed (offline linear probe, :mod:`coopt_flower.probing`)
and the training time of the epoch is recorded without the probe. The per-epoch probe is
cheaper than the protocol's default (``--probe-epochs`` passes of Adam, ~800 steps on
2000 images, instead of >= 3000 steps); the final epoch is also probed with the default
protocol (``--full-probe-steps``). Every row uses the same probes.

Commands: the committed results, and a smoke configuration
(``simulations/configs/benchmark-tiny.yaml``) that runs end to end in about a minute::

    python -m simulations.benchmark --config simulations/configs/benchmark-small.yaml
    python -m simulations.benchmark --tiny --out-dir /tmp/coopt-benchmark-tiny

Outputs in ``--out-dir`` (default ``simulations/results/<config stem>/``): ``benchmark.json`` (everything, per seed and per epoch),
``benchmark.md`` (tables) and ``benchmark_probe_curves.png`` (probe accuracy vs epoch and vs
wall clock, mean over seeds).
"""

from simulations.benchmark.config import (  # noqa: F401  (the package's public names)
    ALIGNED, BYOL, BYOL_CONVERGED, BYOL_LONG, CCA, HEADS, JSON_NAME, MD_NAME, PLOT_NAME, PROCRUSTES, RANDOM, SINGLE,
    SUPERVISED, UNALIGNED, Config, load_config)
from simulations.benchmark.curves import acc_at_time, curve_points, speedup, time_to_reach  # noqa: F401
from simulations.benchmark.datasets import build_datasets, dataset_dir  # noqa: F401
from simulations.benchmark.features import cached_features, slug  # noqa: F401
from simulations.benchmark.main import main, parse_args, restore_runs, run, run_keys  # noqa: F401
from simulations.benchmark.comparisons import healthy_baseline  # noqa: F401
from simulations.benchmark.goals import check_goals  # noqa: F401
from simulations.benchmark.plots import plot  # noqa: F401
from simulations.benchmark.report import render_markdown  # noqa: F401
from simulations.benchmark.summary import not_run, summarize  # noqa: F401
