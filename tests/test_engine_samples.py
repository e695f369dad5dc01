"""The round's samples (coopt_flower.engine.samples): seeded, S from images that decode, shards."""

import numpy as np

from coopt_flower.config import RunSettings
from coopt_flower.data import open_source
from coopt_flower.engine.enrollment import Participant
from coopt_flower.engine.samples import RoundSamples


def settings(tmp_path, **overrides):
    return RunSettings.from_run_config({"num-samples": 200, "shared-size": 32, "target-dim": 16, "seed": 3,
                                        "output-dir": str(tmp_path), **overrides})


def test_samples_and_shared_subset_are_a_function_of_the_seed(tmp_path):
    source = open_source("fashion-mnist")
    a, b = RoundSamples.draw(settings(tmp_path), source), RoundSamples.draw(settings(tmp_path), source)
    c = RoundSamples.draw(settings(tmp_path, seed=4), source)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.shared_ids, b.shared_ids)
    assert not np.array_equal(a.ids, c.ids) and np.isin(a.shared_ids, a.ids).all()
    assert a.read_shared(source).shape == (32, 28, 28, 3)


def test_node_local_data_follows_the_source_and_the_rest_is_split_among_the_holders(tmp_path):
    source = open_source("fashion-mnist")
    samples = RoundSamples.draw(settings(tmp_path), source)
    people = [Participant("p0", 0), Participant("p1", 1, local_count=5), Participant("p2", 2)]
    shards = samples.split(people, len(source))
    assert people[1].local_base == len(source) and shards.holders == {"p0", "p2"}
    assert shards.local["p1"].tolist() == list(range(len(source), len(source) + 5))
    assert len(shards.shards["p1"]) == 0 and len(shards.shards["p0"]) + len(shards.shards["p2"]) == 200
    assert sorted(np.concatenate([shards.shards["p0"], shards.shards["p2"]]).tolist()) == samples.ids.tolist()
    assert len(shards.all_ids) == 205


def test_a_label_skewed_split_counts_each_holders_classes(tmp_path):
    source = open_source("fashion-mnist")
    samples = RoundSamples.draw(settings(tmp_path, partitioner="dirichlet:0.1"), source)
    people = [Participant(f"p{i}", i) for i in range(3)]
    shards = samples.split(people, len(source))
    assert sum(len(s) for s in shards.shards.values()) == 200 and np.array_equal(shards.all_ids, samples.ids)
    for p in people:
        assert p.label_counts == np.bincount(source.labels(shards.shards[p.name]), minlength=10).tolist()
    iid = [Participant("q", 0), Participant("r", 1)]
    RoundSamples.draw(settings(tmp_path), source).split(iid, len(source))
    assert max(max(p.label_counts) / sum(p.label_counts) for p in people) > max(
        max(p.label_counts) / sum(p.label_counts) for p in iid)


def test_classes_nobody_holds_are_not_in_the_dataset(tmp_path):
    source = open_source("fashion-mnist")
    samples = RoundSamples.draw(settings(tmp_path, partitioner="classes:1"), source)
    shards = samples.split([Participant("p0", 0), Participant("p1", 1)], len(source))
    assert set(source.labels(shards.all_ids).tolist()) == {0, 1}
    assert sorted(np.concatenate(list(shards.shards.values())).tolist()) == shards.all_ids.tolist()


def test_a_label_partitioner_on_a_source_without_labels_is_refused_before_any_work(tmp_path):
    import pytest
    from PIL import Image

    from coopt_flower.partitions import PartitionError

    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(folder / f"{i:02d}.png")
    with pytest.raises(PartitionError, match=f"folder:{folder} has none"):
        RoundSamples.draw(settings(tmp_path, partitioner="classes:2", **{"num-samples": 40, "shared-size": 8}),
                          open_source(f"folder:{folder}"))
