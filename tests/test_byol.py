"""BYOL baseline: a step trains the online network and EMA-updates the target."""

import numpy as np
import pytest
import torch

from coopt_flower.augment import TrainAugment
from coopt_flower.byol import BYOL, byol_momentum, byol_step, train_byol
from coopt_flower.students import create_student
from coopt_flower.trainer import TrainConfig, make_optimizer
from coopt_flower.training import load_student


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
