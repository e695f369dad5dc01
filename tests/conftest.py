"""Shared fixtures."""

import pytest
import torch
from torch.utils.data import TensorDataset


@pytest.fixture
def train_tiny_student(tmp_path):
    """``train_tiny_student(image_size, target_dim)`` -> (TrainResult, uint8 images (16,3,s,s)).

    A one-epoch small-cnn checkpoint in ``tmp_path``: enough to exercise every path that
    loads, ships or encodes with a student.
    """
    from coopt_flower.student_training import TrainConfig, train_on_optimized

    def train(image_size: int = 16, target_dim: int = 8):
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (16, 3, image_size, image_size), dtype=torch.uint8, generator=gen)
        targets = torch.randn(16, target_dim, generator=gen)
        config = TrainConfig(arch="small-cnn", image_size=image_size, epochs=1, batch_size=8,
                             checkpoint_dir=tmp_path / "student", progress=False)
        result = train_on_optimized(TensorDataset(images, targets), config)
        return result, images

    return train
