"""What defines one benchmark run, read from a YAML file in ``simulations/configs``.

Every field of :class:`Config` is a key of the YAML file; a file may leave keys out (they keep
the defaults below, which equal ``simulations/configs/benchmark.yaml``, the real-budget default:
a test checks it) and a misspelt key is refused with the closest valid one. The results record
the file they came from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import yaml

from coopt_flower.config import DEFAULT_PROTOTYPES
from coopt_flower.errors import did_you_mean

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = CONFIGS_DIR / "benchmark.yaml"
TINY_CONFIG = CONFIGS_DIR / "benchmark-tiny.yaml"
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
JSON_NAME = "benchmark.json"
MD_NAME = "benchmark.md"
PLOT_NAME = "benchmark_probe_curves.png"

# Row names. Single-prototype rows are "single:<spec>".
RANDOM, SUPERVISED, BYOL = "random init", "supervised", "BYOL"
UNALIGNED, ALIGNED = "CoOpt (no alignment)", "CoOpt (aligned)"
HEADS = "CoOpt (heads)"  # merge=heads: no alignment, one student head per participant
# The product's two other alignment merges (merge=align-procrustes / align-cca), same shards.
PROCRUSTES, CCA = "CoOpt (procrustes)", "CoOpt (cca)"
BYOL_LONG = "BYOL, longer budget"  # supplementary: more epochs than everyone else
BYOL_CONVERGED = "BYOL, converged"  # trained until its validation probe plateaus
SINGLE = "single:"
SINGLE_ROWS = ("all", "best")


@dataclass
class Config:
    """Everything that defines one benchmark run (stored in the results)."""

    num_train: int = 10000
    num_test: int = 10000
    # Labeled training images outside every reportable seed's sample that every choice is made
    # on (simulations.benchmark.validation); 0: no validation split (then no choice can be made
    # fairly, and single_rows must be "all").
    num_val: int = 2000
    val_seed: int = 0
    epochs: int = 10
    seeds: tuple[int, ...] = (0, 1, 2)
    prototypes: tuple[str, ...] = DEFAULT_PROTOTYPES
    proto_image_size: int = 96
    # Prototypes that encode at another size than proto_image_size: "SPEC=SIZE;SPEC=SIZE"
    # (SIZE 0: the prototype's native size, e.g. a student checkpoint's training size).
    proto_image_sizes: str = ""
    target_dim: int = 512
    shared_size: int = 256
    target_dtype: str = "float16"
    image_size: int = 32
    # 64, not 256: at 5 epochs of 2000 images batch 256 gave 40 optimizer steps, too few for
    # any method to move off the random-init student (seed 0: supervised +2 points, BYOL +0).
    batch_size: int = 64
    lr: float = 8e-3  # chosen for CoOpt on the validation split (simulations/results/coopt-lr)
    weight_decay: float = 0.01
    arch: str = "small-cnn"
    # Further students, comma-separated (the cross-architecture table: every one trains on the
    # same merged dataset, CoOpt (aligned) and BYOL rows); "" or "none": only ``arch``, e.g.
    # for a run that must fit a time limit.
    arch2: str = "torchvision:resnet18,torchvision:mobilenet_v3_small,vit-tiny-4x4"
    # "all": one single-prototype row per prototype; "best": only the prototype whose own
    # features probe highest on the labeled probe (the floors, computed anyway; full probe,
    # ties broken by the per-epoch probe), chosen per seed before any training.
    single_rows: str = "all"
    # The CoOpt (procrustes) and CoOpt (cca) rows (first student only); false skips them.
    extra_merges: bool = True
    # Supplementary BYOL row for the first student with this many epochs (0 = off): at the
    # equal budget BYOL may not improve on the random-init student at all, which leaves the
    # speedup undefined; a longer BYOL run gives it a target to measure against.
    byol_long_epochs: int = 30
    # BYOL trained to convergence (the "BYOL, converged" row of every student): until its
    # validation probe gains less than plateau_min_gain over plateau_window epochs, or at most
    # this many epochs (0: no such row); on the seeds of converged_seeds. Resumable: its
    # checkpoint is kept in the work dir, so a run of hours can be split into invocations.
    byol_converged_epochs: int = 100
    converged_seeds: tuple[int, ...] = (0,)
    plateau_window: int = 10
    plateau_min_gain: float = 0.003
    # The BYOL rows' optimizer recipe (coopt_flower.byol.BYOL_RECIPES): "shared" trains BYOL
    # with the AdamW every other row uses; the others are the small-image recipes of the
    # self-supervised libraries (SGD or LARS, warmup, cosine decay). Only BYOL rows change.
    # One name for every student, or per student: "shared,torchvision:resnet18=sgd-cosine"
    # (a bare name is the default of the students not listed). The default: the AdamW every
    # row shares is healthy for small-cnn on every seed, not for ResNet-18 and MobileNetV3
    # (below their random init / collapsing) nor for the ViT on seed 0 (below its init at
    # epoch 10), whose BYOL uses the recipe that was best on each at 5 epochs of seed 0
    # (simulations/results/byol-recipes): SGD for the CNNs, AdamW with warmup and cosine
    # decay for the ViT.
    byol_recipe: str = ("small-cnn=sgd-cosine,torchvision:resnet18=sgd-cosine-lightly,"
                        "torchvision:mobilenet_v3_small=sgd-cosine,vit-tiny-4x4=adamw-cosine")
    # The BYOL rows' views (coopt_flower.byol_views.BYOL_VIEWS): "byol" is BYOL's own pair of
    # asymmetric views (the paper's, blur scaled to the image size), "byol-noblur" lightly's
    # CIFAR variant, "shared" the augmentation every method shares. One name, or per student
    # as byol_recipe ("byol,vit-tiny-4x4=byol-noblur").
    byol_views: str = "byol"
    probe_epochs: int = 100
    full_probe_steps: int = 3000
    encode_batch_size: int = 128
    threads: int = 0  # torch threads (0 = every core of this machine)
    device: str = "cpu"  # where prototypes encode, students train and probes run
    data: str = "fashion-mnist"
    test_data: str = "fashion-mnist:test"
    test_seed: int = 0
    tiny: bool = False

    def __post_init__(self) -> None:
        if self.arch2 is None:  # `arch2: null` in YAML
            self.arch2 = ""
        if self.single_rows not in SINGLE_ROWS:
            raise ValueError(f"single_rows must be one of {', '.join(SINGLE_ROWS)}, got {self.single_rows!r}")

        self.byol_recipes()  # an unknown recipe is refused here
        self.byol_views_for(self.arch)  # and unknown views
        if not isinstance(self.extra_merges, bool):
            raise ValueError(f"extra_merges must be true or false, got {self.extra_merges!r}")
        self.archs()  # a student named twice is refused here, not after hours of training
        self._proto_sizes()  # a malformed size is refused here

    def proto_size(self, spec: str) -> int:
        """The image size ``spec`` encodes at (``proto_image_sizes``, else ``proto_image_size``)."""
        return self._proto_sizes().get(spec, self.proto_image_size)

    def _proto_sizes(self) -> dict[str, int]:
        sizes = {}
        for entry in filter(None, (e.strip() for e in (self.proto_image_sizes or "").split(";"))):
            spec, sep, size = entry.rpartition("=")
            if not sep or not spec.strip() or not size.strip().isdigit():
                raise ValueError(f"proto_image_sizes entries are SPEC=SIZE (SIZE >= 0), got {entry!r}")
            sizes[spec.strip()] = int(size)
        return sizes

    def check_runnable(self) -> None:
        """Refuse, before any work, a run that would have to make a choice on the test set
        (results written before the validation split still read: they are not run again)."""
        if self.single_rows == "best" and self.num_val <= 0:
            raise ValueError("single_rows: best picks a prototype, which needs a validation split "
                             "(num_val > 0): the test set makes no choices")
        if self.byol_converged_epochs > 0 and self.num_val <= 0:
            raise ValueError("byol_converged_epochs: convergence is judged on the validation split: "
                             "set num_val > 0 (or byol_converged_epochs: 0)")

    def archs(self) -> list[str]:
        """The students this config trains: ``arch``, then each of ``arch2`` (comma-separated)."""
        more = [a.strip() for a in (self.arch2 or "").split(",")]
        more = [a for a in more if a and a.lower() != "none"]
        dup = sorted({a for a in [self.arch] + more if ([self.arch] + more).count(a) > 1})
        if dup:
            raise ValueError(f"arch2 names a student twice (or repeats arch): {', '.join(dup)}")
        return [self.arch] + more

    def byol_recipes(self) -> dict[str, str]:
        """``byol_recipe`` parsed: ``{student: recipe}``, the default under ``""``."""
        from coopt_flower.byol import BYOL_RECIPES

        return per_student("byol_recipe", self.byol_recipe, BYOL_RECIPES, "recipe", "recipes")

    def byol_recipe_for(self, arch: str) -> str:
        """The optimizer recipe of ``arch``'s BYOL rows."""
        recipes = self.byol_recipes()
        return recipes.get(arch, recipes[""])

    def byol_views_for(self, arch: str) -> str:
        """The views of ``arch``'s BYOL rows (:data:`coopt_flower.byol_views.BYOL_VIEWS`)."""
        from coopt_flower.byol_views import BYOL_VIEWS

        views = per_student("byol_views", self.byol_views, BYOL_VIEWS, "views", "known")
        return views.get(arch, views[""])

    def arch_rows(self, arch: str, singles: Sequence[str], seed: int | None = None) -> list[str]:
        """The training rows of one student, most important first (a cut run keeps those).

        ``singles``: the prototypes that get a single-prototype row (all of them, or the best);
        ``seed``: the seed they are for (converged BYOL runs only on ``converged_seeds``; None:
        every row any seed may have).
        """
        converged = [BYOL_CONVERGED] if self.byol_converged_epochs > 0 and (
            seed is None or int(seed) in self.converged_seeds) else []
        if arch != self.arch:
            return [ALIGNED, BYOL] + converged
        rows = [ALIGNED, BYOL, SUPERVISED] + [SINGLE + s for s in singles] + [UNALIGNED, HEADS]
        if self.byol_long_epochs > 0:
            rows.append(BYOL_LONG)
        rows += converged
        if self.extra_merges:
            rows += [PROCRUSTES, CCA]
        return rows

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, where: str = "config") -> Config:
        """A config from plain values (YAML, or a results file); lists become tuples."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise ValueError(f"{where}: unknown benchmark key {key!r}{did_you_mean(key, known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def per_student(key: str, text: str, known, what: str = "value", plural: str = "values") -> dict[str, str]:
    """A per-student setting parsed: ``"a,student=b"`` -> ``{"": "a", "student": "b"}`` (the
    bare name is the default of the students not listed; "shared" when there is none)."""
    out: dict[str, str] = {}
    for entry in [e.strip() for e in str(text).split(",") if e.strip()]:
        student, _, value = entry.rpartition("=")
        student, value = student.strip(), value.strip()
        if value not in known:
            raise ValueError(f"{key}: unknown {what} {value!r} in {entry!r}; {plural}: {', '.join(known)}")
        if student in out:
            raise ValueError(f"{key} names {student or 'the default'} twice")
        out[student] = value
    out.setdefault("", "shared")
    return out


def load_config(path: str | Path) -> Config:
    """Read a benchmark config from a YAML file."""
    path = Path(path)
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of benchmark keys, got {type(values).__name__}")
    return Config.from_dict(values, where=str(path))
