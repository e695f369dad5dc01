"""The shared training loop: its settings, a scheduled run's record and an exact resume."""

import numpy as np
import pytest
import torch

from coopt_flower.student_training import load_checkpoint, train_supervised
from coopt_flower.training_loop import TrainConfig


def test_train_config_names_the_bad_optimizer_schedule_or_warmup():
    with pytest.raises(ValueError, match="optimizer must be one of adamw, sgd, lars, got 'Adam'"):
        TrainConfig(optimizer="Adam")
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, cosine"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(warmup_epochs=-1)


def _bright_vs_dark(n=48):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    images = torch.randint(0, 60, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    images[labels == 1] += 150
    return images, labels.numpy()


def test_a_scheduled_sgd_run_learns_records_its_recipe_and_resumes_exactly(tmp_path):
    images, labels = _bright_vs_dark()
    kw = dict(arch="small-cnn", image_size=8, batch_size=16, lr=0.05, optimizer="sgd",
              lr_schedule="cosine", warmup_epochs=1, seed=0, progress=False,
              arch_kwargs={"widths": (8, 16)})
    full = train_supervised(images, labels, TrainConfig(epochs=4, checkpoint_dir=tmp_path / "a", **kw))
    assert full.losses[-1] < full.losses[0]
    record = load_checkpoint(tmp_path / "a")["config"]
    assert (record["optimizer"], record["lr_schedule"], record["warmup_epochs"]) == ("sgd", "cosine", 1)
    # The rate is a function of the step: a 4-epoch run killed during epoch 3 (its
    # checkpoint holds epoch 2) and resumed ends exactly where the uninterrupted run does.
    class Killed(Exception):
        pass

    def kill_at_3(epoch, backbone):
        if epoch == 3:
            raise Killed

    with pytest.raises(Killed):
        train_supervised(images, labels, TrainConfig(epochs=4, checkpoint_dir=tmp_path / "b", **kw),
                         on_epoch_end=kill_at_3)
    resumed = train_supervised(images, labels, TrainConfig(epochs=4, checkpoint_dir=tmp_path / "b",
                                                           resume=True, **kw))
    assert resumed.losses[2:] == pytest.approx(full.losses[2:], rel=1e-5)


def test_the_default_adamw_record_is_what_it_was_before_the_optimizer_settings(tmp_path):
    images, labels = _bright_vs_dark(16)
    train_supervised(images, labels, TrainConfig(arch="small-cnn", image_size=8, epochs=1,
                                                 batch_size=8, progress=False,
                                                 checkpoint_dir=tmp_path,
                                                 arch_kwargs={"widths": (8, 16)}))
    record = load_checkpoint(tmp_path)["config"]
    assert not {"optimizer", "momentum", "lr_schedule", "warmup_epochs"} & set(record)


def test_on_epoch_end_can_stop_training_after_an_epoch(tmp_path):
    from coopt_flower.student_training import train_supervised
    from coopt_flower.training_loop import TrainConfig

    x = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    y = np.arange(16) % 2
    seen = []

    def stop_at_two(epoch, backbone):
        seen.append(epoch)
        return {"stop": epoch == 2, "why": "a test"}

    result = train_supervised(x, y, TrainConfig(arch="small-cnn", image_size=16, epochs=5, batch_size=8,
                                                checkpoint_dir=tmp_path, progress=False),
                              on_epoch_end=stop_at_two)
    assert seen == [1, 2] and len(result.losses) == 2
    from coopt_flower.checkpoints import load_checkpoint

    assert load_checkpoint(tmp_path)["epoch"] == 2
