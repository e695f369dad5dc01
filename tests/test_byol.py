"""BYOL baseline: a step trains the online network and EMA-updates the target."""

import math

import numpy as np
import pytest
import torch

from coopt_flower.augment import TrainAugment
import torch.nn.functional as F

from coopt_flower.byol import BYOL, byol_momentum, byol_step, train_byol
from coopt_flower.optimizers import make_optimizer
from coopt_flower.student_training import load_student
from coopt_flower.students import create_student
from coopt_flower.training_loop import TrainConfig


def _flat(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_one_step_updates_online_and_momentum_target():
    torch.manual_seed(0)
    backbone = create_student("small-cnn", image_size=16, widths=(8, 16))
    model = BYOL(backbone, hidden_dim=32, proj_dim=16)
    assert not any(p.requires_grad for p in model.backbone_momentum.parameters())
    optimizer = make_optimizer(model.online_parameters(), lr=1e-2, weight_decay=0.01)
    aug = TrainAugment(16)
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    online0 = _flat(model.backbone).clone()
    target0 = _flat(model.backbone_momentum).clone()
    proj_target0 = _flat(model.projection_head_momentum).clone()
    assert torch.equal(online0, target0)  # the target starts as a copy

    loss = byol_step(model, optimizer, aug(x), aug(x), momentum=byol_momentum(0, 100))
    assert np.isfinite(loss) and -1.0 <= loss <= 1.0

    online_change = (_flat(model.backbone) - online0).norm()
    target_change = (_flat(model.backbone_momentum) - target0).norm()
    assert target_change > 0
    assert target_change < online_change
    # With m = 0.99 the target moves exactly 1% of the way to the online weights.
    assert target_change.item() == pytest.approx(0.01 * online_change.item(), rel=1e-3)
    # The target projection head is updated too.
    assert not torch.equal(_flat(model.projection_head_momentum), proj_target0)


def test_momentum_schedule_rises_from_099_to_1():
    ms = [byol_momentum(s, 50) for s in range(50)]
    assert ms[0] == pytest.approx(0.99)
    assert ms[-1] == pytest.approx(1.0)
    assert all(a <= b + 1e-12 for a, b in zip(ms, ms[1:]))
    # On a cosine: half-way up at the middle step, and exactly the cosine everywhere.
    for s, m in enumerate(ms):
        expected = 1.0 - 0.01 * (math.cos(math.pi * s / 49) + 1) / 2
        assert m == pytest.approx(expected, abs=1e-12)
    assert byol_momentum(10, 21) == pytest.approx(0.995)


def test_target_update_is_an_exact_ema_towards_the_online_network():
    torch.manual_seed(0)
    model = BYOL(create_student("small-cnn", image_size=8, widths=(8, 16)), hidden_dim=16, proj_dim=8)
    with torch.no_grad():  # move the online network away from its copy
        for p in model.online_parameters():
            p.add_(torch.randn_like(p))
    online = torch.cat([_flat(model.backbone), _flat(model.projection_head)])
    target = torch.cat([_flat(model.backbone_momentum), _flat(model.projection_head_momentum)])
    model.update_target(0.9)
    moved = torch.cat([_flat(model.backbone_momentum), _flat(model.projection_head_momentum)])
    # t <- m t + (1 - m) o: the target closes 10% of its distance to the online network,
    # and the online network does not move.
    assert torch.allclose(moved, 0.9 * target + 0.1 * online, atol=1e-6)
    assert (moved - online).norm() == pytest.approx(0.9 * (target - online).norm().item(), rel=1e-4)
    assert torch.equal(torch.cat([_flat(model.backbone), _flat(model.projection_head)]), online)
    model.update_target(1.0)  # the schedule's end: the target stops moving
    assert torch.equal(torch.cat([_flat(model.backbone_momentum),
                                  _flat(model.projection_head_momentum)]), moved)


def test_train_byol_loss_decreases_and_momentum_follows_the_schedule():
    # Smooth images and mild augmentation: views of one image share most of their content.
    g = torch.Generator().manual_seed(0)
    latent = torch.rand(64, 3, 4, 4, generator=g)
    images = F.interpolate(latent, size=(8, 8), mode="bilinear", align_corners=False)
    images = (images * 255).round().to(torch.uint8)
    mild = TrainAugment(8, scale=(0.8, 1.0), jitter_p=0.0, grayscale_p=0.0)
    config = TrainConfig(arch="small-cnn", epochs=6, batch_size=16, lr=3e-3, seed=0,
                         progress=False, arch_kwargs={"widths": (8, 16)}, augment=mild)
    result = train_byol(images, config, hidden_dim=32, proj_dim=16)
    # The loss lies in [-1, 1]; an untrained predictor starts near 0.
    assert all(-1.0 <= v <= 1.0 for v in result.losses)
    assert result.losses[-1] < result.losses[0] - 0.3, result.losses
    assert result.losses[-1] < min(result.losses[:3]), result.losses
    # 4 steps an epoch, 24 in all: the momentum after epoch e is the schedule's value for
    # the update after step 4e (counted from 1), ending at exactly 1.0.
    assert result.momentums == [byol_momentum(4 * e - 1, 24) for e in range(1, 7)]
    assert result.momentums[-1] == 1.0
    assert all(a < b for a, b in zip(result.momentums, result.momentums[1:]))


def test_train_byol_runs_and_checkpoints(tmp_path):
    images = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8)
    epochs_seen = []
    config = TrainConfig(arch="small-cnn", image_size=8, epochs=2, batch_size=8, seed=0,
                         progress=False, checkpoint_dir=tmp_path, arch_kwargs={"widths": (8, 16)})
    result = train_byol(
        images, config, hidden_dim=32, proj_dim=16,
        on_epoch_end=lambda e, bb: epochs_seen.append((e, bb.feature_dim)),
    )
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
    assert epochs_seen == [(1, 16), (2, 16)]
    assert result.momentums[-1] == pytest.approx(1.0)
    assert result.momentums[0] < result.momentums[-1]
    backbone, head, ckpt = load_student(result.checkpoint_path)
    assert head is None and ckpt["config"]["method"] == "byol"
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(backbone(x), result.backbone.eval()(x), atol=1e-5)


def test_byol_recipes_change_only_the_optimizer_and_scale_the_rate_to_the_batch():
    from coopt_flower.byol import BYOL_RECIPES, byol_train_config

    base = TrainConfig(arch="small-cnn", image_size=16, epochs=7, batch_size=64, seed=3,
                       device="cpu", augment=TrainAugment(16))
    assert byol_train_config(base) == base and byol_train_config(base, "shared") == base
    lars = byol_train_config(base, "lars-cosine")
    assert (lars.optimizer, lars.lr, lars.weight_decay, lars.lr_schedule, lars.warmup_epochs) == (
        "lars", 0.25, 1e-5, "cosine", 1.0)
    assert byol_train_config(base, "sgd-cosine").lr == pytest.approx(0.06 * 64 / 256)
    lightly_sgd = byol_train_config(base, "sgd-cosine-lightly")  # lightly: 0.06 per 128
    assert (lightly_sgd.lr, lightly_sgd.warmup_epochs) == (pytest.approx(0.06 * 64 / 128), 0.0)
    for recipe in BYOL_RECIPES:
        changed = byol_train_config(base, recipe)
        for kept in ("arch", "image_size", "epochs", "batch_size", "seed", "device", "augment"):
            assert getattr(changed, kept) == getattr(base, kept), (recipe, kept)
    with pytest.raises(ValueError, match="unknown BYOL recipe 'lars'.*lars-cosine"):
        byol_train_config(base, "lars")


def test_train_byol_with_the_lars_recipe_trains_and_keeps_its_settings_in_the_record(tmp_path):
    from coopt_flower.byol import byol_train_config
    from coopt_flower.student_training import load_checkpoint

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8, generator=g)
    config = byol_train_config(TrainConfig(arch="small-cnn", image_size=8, epochs=2, batch_size=16,
                                           progress=False, checkpoint_dir=tmp_path,
                                           arch_kwargs={"widths": (8, 16)}), "lars-cosine")
    result = train_byol(images, config, hidden_dim=32, proj_dim=16)
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
    record = load_checkpoint(tmp_path)["config"]
    assert record["optimizer"] == "lars" and record["lr"] == 1.0 * 16 / 256
