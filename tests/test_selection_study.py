"""The selection study's helpers (the study itself is a long run: simulations/selection_study.py)."""

import numpy as np
import pytest

from simulations.selection_study import parse_entry, spearman, write_digits_folder


def test_pool_entries_carry_their_image_size():
    assert parse_entry("efficientnet-lite0@32") == ("efficientnet-lite0", 32)
    assert parse_entry("random:open_clip:ViT-B-32@224") == ("random:open_clip:ViT-B-32", 224)
    with pytest.raises(ValueError, match="SPEC@IMAGE_SIZE"):
        parse_entry("efficientnet-lite0")


def test_spearman_follows_the_ranks():
    pytest.importorskip("scipy")
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_digits_are_written_as_a_labeled_image_folder(tmp_path):
    pytest.importorskip("sklearn")
    from coopt_flower.data import open_source

    write_digits_folder(tmp_path / "digits")
    train, test = (open_source(f"folder:{tmp_path / 'digits' / s}") for s in ("train", "test"))
    assert len(train) + len(test) == 1797 and len(train) == 1198
    labels = train.labels(np.arange(len(train)))
    assert set(labels.tolist()) == set(range(10))
    images = train.images(np.arange(2))
    assert images.shape[0] == 2 and images.shape[-1] == 3 and images.dtype == np.uint8
