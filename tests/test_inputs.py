"""The one input path: images decoded once, batches sliced in the loader's order."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from coopt_flower.data import select_samples
from coopt_flower.dataset_format import load_optimized_dataset
from coopt_flower.dataset_writer import DatasetWriter
from coopt_flower.inputs import loader_order_batches, preload_images
from coopt_flower.student_training import TrainConfig, train_on_optimized


@pytest.mark.parametrize("n, batch_size", [(37, 8), (33, 8), (16, 16), (5, 8)])
def test_batches_follow_a_shuffling_dataloader_and_leave_the_generator_alike(n, batch_size):
    g_loader, g_ours = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    loader = DataLoader(list(range(n)), batch_size=batch_size, shuffle=True,
                        drop_last=n % batch_size == 1, generator=g_loader)
    expected = [batch.tolist() for batch in loader]
    got = [batch.tolist() for batch in loader_order_batches(n, batch_size, g_ours)]
    assert got == expected
    # The augmentations that follow draw from the same generator state.
    assert torch.equal(torch.rand(4, generator=g_loader), torch.rand(4, generator=g_ours))


@pytest.fixture(scope="module")
def optimized(tmp_path_factory):
    path = tmp_path_factory.mktemp("ds") / "round-001"
    ids = select_samples(60000, 90, 3)
    targets = np.random.default_rng(0).normal(size=(90, 12)).astype(np.float32)
    with DatasetWriter(path, ids, 12, "float16") as writer:
        writer.write(ids, targets, owner=0)
        writer.commit({"source": "fashion-mnist", "participants": [{"name": "p0"}]})
    return load_optimized_dataset(path)


def test_a_seeded_epoch_gives_the_loaders_pairs(optimized):
    loader = DataLoader(optimized, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(1))
    images = preload_images(optimized.images, len(optimized))
    targets = torch.from_numpy(np.asarray(optimized.targets, dtype=np.float32))
    fast = loader_order_batches(len(optimized), 16, torch.Generator().manual_seed(1))
    count = 0
    for (x_loader, y_loader), idx in zip(loader, fast, strict=True):
        assert torch.equal(images[idx], x_loader) and torch.equal(targets[idx], y_loader)
        count += len(idx)
    assert count == 90


def test_memory_mapped_images_equal_the_in_memory_ones(optimized, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    in_memory = preload_images(optimized.images, len(optimized))
    mapped = preload_images(optimized.images, len(optimized), memory_limit_bytes=1000, chunk_size=7)
    assert torch.equal(in_memory, mapped) and in_memory.shape == (90, 3, 28, 28)
    assert list(tmp_path.iterdir()) == []  # the temporary file is unlinked at once


def test_training_is_the_same_with_and_without_the_preloaded_path(optimized):
    runs = []
    for preload in (True, False):
        config = TrainConfig(arch="small-cnn", image_size=16, epochs=2, batch_size=32,
                             progress=False, preload=preload)
        result = train_on_optimized(optimized, config)
        runs.append((result.losses, result.model.state_dict()))
    (losses_a, state_a), (losses_b, state_b) = runs
    assert losses_a == losses_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_a_nan_loss_stops_training_with_the_epoch_named(optimized):
    bad = torch.utils.data.TensorDataset(torch.zeros(8, 3, 16, 16, dtype=torch.uint8),
                                         torch.full((8, 4), float("nan")))
    with pytest.raises(FloatingPointError, match="during epoch 1"):
        train_on_optimized(bad, TrainConfig(image_size=16, epochs=1, batch_size=4, progress=False))
