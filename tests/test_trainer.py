"""The shared training loop's optimizer choices and learning-rate schedule."""

import math

import pytest
import torch
from lightly.utils.lars import LARS

from coopt_flower.trainer import LARS_TRUST, TrainConfig, learning_rate, make_optimizer
from coopt_flower.training import load_checkpoint, train_supervised


def test_learning_rate_warms_up_linearly_then_holds_or_decays_to_zero():
    # Warmup: step s of w gets (s + 1) / w of the peak, the same for both schedules.
    assert [learning_rate(s, 100, 2.0, "constant", 4) for s in range(5)] == [0.5, 1.0, 1.5, 2.0, 2.0]
    assert [learning_rate(s, 100, 2.0, "cosine", 4) for s in range(4)] == [0.5, 1.0, 1.5, 2.0]
    assert learning_rate(99, 100, 2.0, "constant") == 2.0
    cosine = [learning_rate(s, 100, 2.0, "cosine", 4) for s in range(4, 100)]
    assert cosine[0] == 2.0 and cosine[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(cosine, cosine[1:]))  # never rises after the warmup
    # Halfway through the decay the rate is half the peak.
    assert learning_rate(4 + 95 // 2, 100, 2.0, "cosine", 4) == pytest.approx(
        1.0 + math.cos(math.pi * (95 // 2) / 95), rel=1e-12)


def test_make_optimizer_adamw_decays_everything_sgd_and_lars_spare_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    adamw = make_optimizer(model.parameters(), 1e-3, 0.01)
    assert isinstance(adamw, torch.optim.AdamW) and len(adamw.param_groups) == 1
    assert adamw.param_groups[0]["weight_decay"] == 0.01
    for name, kind in (("sgd", torch.optim.SGD), ("lars", LARS)):
        opt = make_optimizer(model.parameters(), 0.1, 5e-4, name, momentum=0.8)
        assert isinstance(opt, kind)
        decayed, spared = opt.param_groups
        assert [p.ndim for p in decayed["params"]] == [2] and decayed["weight_decay"] == 5e-4
        # Linear bias, BN weight and bias: no decay (and, for LARS, no trust-ratio scaling).
        assert [p.ndim for p in spared["params"]] == [1, 1, 1] and spared["weight_decay"] == 0.0
        assert decayed["momentum"] == 0.8
    assert make_optimizer(model.parameters(), 0.1, 0.0, "lars").param_groups[0]["trust_coefficient"] == LARS_TRUST
    with pytest.raises(ValueError, match="adamw, sgd, lars"):
        make_optimizer(model.parameters(), 0.1, 0.0, "adam")


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
