"""Linear probe: beats chance on separable data, stays at chance on shuffled labels."""

import numpy as np
import pytest
import torch

from coopt_flower.probing import (
    extract_features,
    linear_probe,
    mean_std,
    probe_backbone,
)
from coopt_flower.students import create_student


def _blobs(n_per_class=100, classes=4, dim=32, seed=0, spread=0.5):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 3
    x = np.concatenate([centers[c] + spread * rng.normal(size=(n_per_class, dim)) for c in range(classes)])
    y = np.repeat(np.arange(classes), n_per_class)
    perm = rng.permutation(len(y))
    return x[perm].astype(np.float32), y[perm]


def test_probe_beats_chance_on_separable_data():
    xtr, ytr = _blobs(seed=0)
    xte, yte = _blobs(n_per_class=50, seed=0)  # same centers (same seed), fresh noise below
    xte = xte + np.random.default_rng(1).normal(scale=0.5, size=xte.shape).astype(np.float32)
    result = linear_probe(xtr, ytr, xte, yte, seed=0)  # default: >= 3000 steps
    assert result.accuracy > 0.9
    assert result.epochs >= 100 and len(result.test_accuracies) == result.epochs
    assert result.train_accuracy > 0.9
    assert result.accuracy == pytest.approx(np.mean(result.test_accuracies[-3:]))


def test_probe_is_at_chance_on_shuffled_labels():
    rng = np.random.default_rng(0)
    xtr, ytr = _blobs(n_per_class=150, seed=0)
    xte, yte = _blobs(n_per_class=100, seed=0)
    accs = [
        linear_probe(xtr, rng.permutation(ytr), xte, yte, seed=s, min_steps=1000).accuracy
        for s in range(2)
    ]
    assert abs(np.mean(accs) - 0.25) < 0.1, accs


def test_probe_is_seeded():
    xtr, ytr = _blobs(seed=3)
    a = linear_probe(xtr, ytr, xtr, ytr, epochs=3, seed=7)
    b = linear_probe(xtr, ytr, xtr, ytr, epochs=3, seed=7)
    assert a.test_accuracies == b.test_accuracies


def _bright_and_dark(n=80, size=8, seed=0):
    # Class 1 images are brighter: raw pixels (and any random conv net) separate them.
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.randint(0, 100, (n, 3, size, size), dtype=torch.uint8, generator=g)
    images[labels == 1] += 100
    return images, labels


def test_probe_on_raw_pixels():
    images, labels = _bright_and_dark()
    result = linear_probe(images[:60], labels[:60], images[60:], labels[60:], epochs=20)
    assert result.accuracy > 0.9


def test_extract_features_eval_mode_and_resize():
    torch.manual_seed(0)
    backbone = create_student("small-cnn", image_size=16, widths=(8, 16))
    backbone.train()
    images = torch.randint(0, 256, (10, 3, 12, 12), dtype=torch.uint8)
    f1 = extract_features(backbone, images, image_size=16, batch_size=4)
    f2 = extract_features(backbone, images.permute(0, 2, 3, 1).numpy(), image_size=16, batch_size=10)
    assert f1.shape == (10, 16) and f1.dtype == torch.float32
    assert torch.allclose(f1, f2, atol=1e-5)  # eval mode: batch composition does not matter
    assert backbone.training  # mode restored


def test_probe_backbone_is_extract_then_probe():
    torch.manual_seed(0)
    backbone = create_student("small-cnn", image_size=8, widths=(8, 16))
    images, labels = _bright_and_dark()
    result = probe_backbone(backbone, images[:60], labels[:60], images[60:], labels[60:],
                            epochs=2, image_size=8, seed=3, feature_batch_size=7)
    assert result.epochs == 2 and result.seed == 3
    # The extraction keywords go to extract_features, the rest to linear_probe.
    feats = [extract_features(backbone, x, image_size=8) for x in (images[:60], images[60:])]
    direct = linear_probe(feats[0], labels[:60], feats[1], labels[60:], epochs=2, seed=3)
    assert result.test_accuracies == direct.test_accuracies


def test_probe_backbone_separates_what_its_features_separate():
    torch.manual_seed(0)
    backbone = create_student("small-cnn", image_size=8, widths=(8, 16))
    images, labels = _bright_and_dark()
    result = probe_backbone(backbone, images[:60], labels[:60], images[60:], labels[60:],
                            epochs=200, image_size=8)
    assert result.accuracy > 0.9
    # Random labels: the same features carry no information about them.
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    chance = probe_backbone(backbone, images[:60], shuffled[:60], images[60:], shuffled[60:],
                            epochs=200, image_size=8)
    assert abs(chance.accuracy - 0.5) < 0.25, chance.accuracy


def test_mean_std_is_the_sample_std():
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, 0.1414213562))  # ddof=1, not 0.1
    assert mean_std([0.5]) == (0.5, 0.0)


def test_a_validation_set_is_read_by_the_same_probe_without_changing_it():
    from coopt_flower.probing import linear_probe

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 3
    def draw(n, seed):
        r = np.random.default_rng(seed)
        y = r.integers(0, 3, n)
        return (centers[y] + r.normal(size=(n, 8))).astype(np.float32), y
    (xtr, ytr), (xte, yte), (xva, yva) = draw(200, 1), draw(100, 2), draw(100, 3)
    plain = linear_probe(xtr, ytr, xte, yte, epochs=60, seed=4, batch_size=16)
    both = linear_probe(xtr, ytr, xte, yte, epochs=60, seed=4, batch_size=16, also_evaluate={"val": (xva, yva)})
    assert both.test_accuracies == plain.test_accuracies and plain.other_accuracy == {}
    assert 0.8 < both.other_accuracy["val"] <= 1.0
    swapped = linear_probe(xtr, ytr, xva, yva, epochs=60, seed=4, batch_size=16)
    assert both.other_accuracy["val"] == swapped.accuracy  # the very classifier, read on val
