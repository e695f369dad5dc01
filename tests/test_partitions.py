"""Who holds which samples (coopt_flower.partitions): IID, label skew, k classes, size skew."""

import numpy as np
import pytest

from coopt_flower.config import ConfigError, RunSettings
from coopt_flower.data import open_fashion_mnist, select_samples
from coopt_flower.partitions import (
    PartitionError, check_labels, parse_partitioner, partition, partition_iid,
)


@pytest.fixture(scope="module")
def fashion():
    source = open_fashion_mnist()
    ids = select_samples(len(source), 2000, seed=0)
    return ids, source.labels(ids)


def dominant_share(shards, ids, labels):
    """Mean over participants of the share of its most frequent class."""
    lookup = dict(zip(ids.tolist(), labels.tolist()))
    return float(np.mean([np.bincount([lookup[i] for i in s], minlength=10).max() / len(s) for s in shards]))


@pytest.mark.parametrize("spec, expected", [
    ("iid", "iid"), ("dirichlet:0.10", "dirichlet:0.1"), (" Dirichlet:1 ", "dirichlet:1"),
    ("classes:2", "classes:2"), ("sizes:1,2, 4", "sizes:1,2,4"),
])
def test_partitioner_values_parse_to_their_canonical_form(spec, expected):
    assert str(parse_partitioner(spec)) == expected


@pytest.mark.parametrize("spec, words", [
    ("dirichlet:0", "alpha must be a number > 0"), ("dirichlet:-1", "> 0"), ("dirichlet:x", "not a number"),
    ("classes:0", "must be >= 1"), ("classes:1.5", "not a number"), ("sizes:1,0", "> 0"),
    ("shards:4", "is not known"), ("iid:3", "is not known"),
])
def test_bad_partitioner_values_are_refused_with_what_to_fix(spec, words):
    with pytest.raises(PartitionError, match=words):
        parse_partitioner(spec)


def test_a_bad_partitioner_is_a_config_error_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="partitioner=dirichlet:0: alpha"):
        RunSettings.from_run_config({"partitioner": "dirichlet:0", "output-dir": str(tmp_path)})
    assert RunSettings.from_run_config({"output-dir": str(tmp_path)}).partitioner == "iid"


def test_iid_is_todays_partition(fashion):
    ids, labels = fashion
    for a, b in zip(partition(ids, 4, "iid", seed=3, labels=labels), partition_iid(ids, 4, seed=3)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("spec", ["dirichlet:0.1", "dirichlet:1", "classes:3", "sizes:1,2,3,4"])
def test_every_partition_is_deterministic_disjoint_sorted_and_nonempty(fashion, spec):
    ids, labels = fashion
    shards = partition(ids, 4, spec, seed=7, labels=labels)
    again = partition(ids, 4, spec, seed=7, labels=labels)
    other = partition(ids, 4, spec, seed=8, labels=labels)
    assert all(np.array_equal(a, b) for a, b in zip(shards, again))
    assert not all(np.array_equal(a, b) for a, b in zip(shards, other))
    joined = np.concatenate(shards)
    assert len(np.unique(joined)) == len(joined) and np.isin(joined, ids).all()
    assert all(len(s) > 0 and np.all(np.diff(s) > 0) for s in shards)
    if not spec.startswith("classes"):
        assert len(joined) == len(ids)  # every sample has a holder


def test_small_alpha_skews_labels_and_large_alpha_does_not(fashion):
    ids, labels = fashion
    skewed = dominant_share(partition(ids, 4, "dirichlet:0.1", seed=1, labels=labels), ids, labels)
    mild = dominant_share(partition(ids, 4, "dirichlet:100", seed=1, labels=labels), ids, labels)
    iid = dominant_share(partition(ids, 4, "iid", seed=1), ids, labels)
    assert skewed > 0.35 and mild < 0.16 and iid < 0.16


def test_classes_k_gives_each_participant_exactly_k_classes(fashion):
    ids, labels = fashion
    lookup = dict(zip(ids.tolist(), labels.tolist()))
    shards = partition(ids, 10, "classes:2", seed=0, labels=labels)
    assert [len({lookup[i] for i in s}) for s in shards] == [2] * 10
    # participant i's first class is i (mod 10): with 10 participants every class is held
    assert set().union(*({lookup[i] for i in s} for s in shards)) == set(range(10))


def test_classes_nobody_holds_are_left_out_with_a_warning(fashion, caplog):
    ids, labels = fashion
    shards = partition(ids, 2, "classes:1", seed=0, labels=labels)
    held = np.concatenate(shards)
    assert 0 < len(held) < len(ids) and "left out of the dataset" in caplog.text


def test_size_skew_follows_the_weights(fashion):
    ids, _ = fashion
    sizes = [len(s) for s in partition(ids, 4, "sizes:1,2,3,4", seed=0)]
    assert sizes == [200, 400, 600, 800]
    with pytest.raises(PartitionError, match="3 weights for 4 participants"):
        partition(ids, 4, "sizes:1,2,3", seed=0)


def test_label_partitioners_refuse_a_source_without_labels_and_too_many_classes(fashion):
    ids, labels = fashion
    with pytest.raises(PartitionError, match="needs labels .* has none"):
        check_labels(parse_partitioner("dirichlet:0.5"), None, "folder:/photos")
    check_labels(parse_partitioner("sizes:1,1"), None, "folder:/photos")  # needs no labels
    with pytest.raises(PartitionError, match="hold only 10 classes; use k <= 10"):
        check_labels(parse_partitioner("classes:11"), labels, "fashion-mnist")


def test_a_participant_left_without_samples_is_refused_with_what_to_change(fashion):
    ids, labels = fashion
    with pytest.raises(PartitionError, match="raise alpha or num-samples"):
        partition(ids[:12], 10, "dirichlet:0.01", seed=0, labels=labels[:12])
    with pytest.raises(PartitionError, match="participants but only 3 samples"):
        partition(ids[:3], 4, "dirichlet:1", seed=0, labels=labels[:3])
