"""Augmentations, and training a student on a tiny optimized dataset."""

import json
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from coopt_flower import augment as A
from coopt_flower.student_training import (
    LOSS_CURVE_NAME,
    TrainConfig,
    load_checkpoint,
    load_student,
    main,
    train_on_optimized,
    train_supervised,
)

# ---------------------------------------------------------------------------
# augment
# ---------------------------------------------------------------------------


def _images(n=8, size=28, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)


def test_train_augment_shapes_and_dtype():
    aug = A.TrainAugment(32)
    out = aug(_images(size=28))
    assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32
    # Gray input is expanded to RGB; float input in [0, 1] is accepted too.
    assert aug(_images(channels=1)).shape == (8, 3, 32, 32)
    assert aug(_images().float() / 255).shape == (8, 3, 32, 32)
    # Big sources are downsampled first, output size still honored.
    assert A.TrainAugment(16)(_images(n=2, size=96)).shape == (2, 3, 16, 16)


def test_train_augment_is_random_per_call_and_per_sample():
    aug = A.TrainAugment(32)
    x = _images(n=1).expand(8, -1, -1, -1)  # eight copies of one image
    a, b = aug(x), aug(x)
    assert not torch.allclose(a, b)
    # Per-sample parameters: copies of one image come out different.
    assert not torch.allclose(a[0], a[1])


def test_train_augment_deterministic_with_seeded_generator():
    aug = A.TrainAugment(32)
    x = _images()
    a = aug(x, generator=torch.Generator().manual_seed(123))
    b = aug(x, generator=torch.Generator().manual_seed(123))
    c = aug(x, generator=torch.Generator().manual_seed(124))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_identity_parameters_only_normalize():
    x = _images(size=32)
    aug = A.TrainAugment(32, scale=(1, 1), ratio=(1, 1), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)
    expected = A.normalize(x.float() / 255)
    assert torch.allclose(aug(x), expected, atol=1e-5)
    flipped = A.random_resized_crop(x.float(), 32, scale=(1, 1), ratio=(1, 1), flip_p=1.0)
    assert torch.allclose(flipped, x.float().flip(-1), atol=1e-4)


def test_color_ops_match_torchvision():
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for hue in (-0.2, 0.13):
        ref = torch.stack([TF.adjust_hue(img, hue) for img in x])
        assert torch.allclose(A.adjust_hue(x, torch.full((4,), hue)), ref, atol=1e-5)
    assert torch.allclose(A.rgb_to_grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6)
    # With p=1 and only saturation active, color_jitter equals torchvision's op.
    g = torch.Generator().manual_seed(5)
    out = A.color_jitter(x, 0.0, 0.0, 0.8, 0.0, p=1.0, generator=g)
    g = torch.Generator().manual_seed(5)
    torch.rand(4, generator=g)  # the apply mask
    for _ in range(2):  # brightness and contrast factors are drawn even when disabled
        torch.rand(4, generator=g)
    factors = torch.rand(4, generator=g) * 1.6 + 0.2
    ref = torch.stack([TF.adjust_saturation(img, float(f)) for img, f in zip(x, factors)])
    assert torch.allclose(out, ref, atol=1e-5)


def test_random_grayscale_all_or_nothing():
    x = torch.rand(6, 3, 4, 4)
    gray = A.random_grayscale(x, p=1.0)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    assert torch.equal(A.random_grayscale(x, p=0.0), x)


def test_eval_transform():
    t = A.EvalTransform(32)
    x = _images(size=28)
    out = t(x)
    assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32
    assert torch.equal(out, t(x))
    same = A.EvalTransform(28)(x)
    assert torch.allclose(same, A.normalize(x.float() / 255))
    # Non-square: shorter side resized, then center-cropped.
    assert t(torch.zeros(2, 3, 40, 60, dtype=torch.uint8)).shape == (2, 3, 32, 32)


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------


def _tiny_optimized_dataset(n=64, size=16, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Smooth images (upsampled 4x4 noise), so that crops and flips keep most of
    # what the targets depend on.
    latent = torch.rand(n, 3, 4, 4, generator=g)
    images = F.interpolate(latent, size=(size, size), mode="bilinear", align_corners=False)
    images = (images * 255).round().to(torch.uint8)
    # Targets: a fixed random linear function of the pixels (what a prototype +
    # projection would produce, minus the prototype).
    w = torch.randn(3 * size * size, dim, generator=g)
    targets = (images.float().reshape(n, -1) / 255) @ w
    return TensorDataset(images, targets.float())


def test_training_lowers_loss_writes_and_reloads_checkpoint(tmp_path):
    torch.manual_seed(0)
    ds = _tiny_optimized_dataset()
    seen = []
    # Mild augmentation: the test is about the objective and the loop, and strong
    # color jitter on 64 noise images would need many more epochs to show progress.
    mild = A.TrainAugment(16, scale=(0.8, 1.0), jitter_p=0.0, grayscale_p=0.0)
    config = TrainConfig(
        arch="small-cnn", image_size=16, epochs=5, batch_size=32, lr=3e-3, seed=0,
        checkpoint_dir=tmp_path, progress=False, arch_kwargs={"widths": (16, 32, 64)},
        augment=mild,
    )
    result = train_on_optimized(
        ds, config, on_epoch_end=lambda epoch, backbone: seen.append(epoch) or epoch * 10,
    )
    assert len(result.losses) == 5 and len(result.epoch_times) == 5
    assert all(np.isfinite(result.losses))
    # Unlearnable (shuffled) targets stay near 1 - cos = 1; these drop to ~0.4.
    assert result.losses[-1] < 0.75 and result.losses[-1] < result.losses[0] - 0.2, result.losses
    assert seen == [1, 2, 3, 4, 5] and result.epoch_metrics == [10, 20, 30, 40, 50]

    assert result.checkpoint_path.exists()
    curve = json.loads((tmp_path / LOSS_CURVE_NAME).read_text())
    assert curve["loss"] == pytest.approx(result.losses)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic save left no temp files

    ckpt = load_checkpoint(tmp_path)
    assert ckpt["epoch"] == 5 and ckpt["config"]["arch"] == "small-cnn"
    assert torch.allclose(ckpt["target_mean"], result.target_stats.mean)
    backbone, head, _ = load_student(result.checkpoint_path)
    x = torch.randn(4, 3, 16, 16)
    result.backbone.eval()
    with torch.no_grad():
        assert torch.allclose(backbone(x), result.backbone(x), atol=1e-5)
        assert torch.allclose(head(backbone(x)), result.head(result.backbone(x)), atol=1e-5)


def test_resume_continues_from_checkpoint(tmp_path):
    ds = _tiny_optimized_dataset(n=32, size=8)
    kw = dict(arch="small-cnn", image_size=8, batch_size=16, seed=1, checkpoint_dir=tmp_path,
              progress=False, arch_kwargs={"widths": (8, 16)})
    full = train_on_optimized(ds, TrainConfig(epochs=3, **kw, resume=False))
    (tmp_path / "last.pt").unlink()
    train_on_optimized(ds, TrainConfig(epochs=2, **kw))
    resumed = train_on_optimized(ds, TrainConfig(epochs=3, resume=True, **kw))
    assert len(resumed.losses) == 3
    # Per-epoch seeding makes the resumed third epoch match the uninterrupted one.
    assert resumed.losses[2] == pytest.approx(full.losses[2], rel=1e-4, abs=1e-5)


def test_supervised_ceiling_runs_and_learns():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(48) % 2
    images = torch.randint(0, 60, (48, 3, 8, 8), dtype=torch.uint8, generator=g)
    images[labels == 1] += 150  # bright vs dark: trivially learnable
    result = train_supervised(
        images, labels.numpy(),
        TrainConfig(arch="small-cnn", image_size=8, epochs=4, batch_size=16, lr=3e-3, seed=0,
                    progress=False, arch_kwargs={"widths": (8, 16)}),
    )
    assert result.head.out_features == 2
    # Chance-level cross-entropy is ln 2 = 0.69.
    assert result.losses[-1] < 0.45 and result.losses[-1] < result.losses[0]


def test_command_line_entry_point(tmp_path, monkeypatch, capsys):
    ds = _tiny_optimized_dataset(n=16, size=8)
    fake = types.ModuleType("coopt_flower.dataset_format")
    calls = []

    def load_optimized_dataset(path, source=None, verify=True, transform=None):
        calls.append(path)
        return ds

    fake.load_optimized_dataset = load_optimized_dataset
    monkeypatch.setitem(sys.modules, "coopt_flower.dataset_format", fake)
    rc = main(["--dataset", str(tmp_path / "ds"), "--arch", "small-cnn", "--epochs", "1",
               "--batch-size", "8", "--out", str(tmp_path / "out"), "--device", "cpu",
               "--no-progress"])
    assert rc == 0 and calls == [str(tmp_path / "ds")]
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["losses"]) == 1
    assert (tmp_path / "out" / "last.pt").exists()


def test_train_config_validates_and_keeps_its_own_arch_kwargs():
    widths = {"widths": (8, 16)}
    config = TrainConfig(arch_kwargs=widths)
    widths["widths"] = (4,)
    assert config.arch_kwargs == {"widths": (8, 16)}
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=-1)


def test_epochs_are_logged_not_printed(caplog, capsys):
    ds = _tiny_optimized_dataset(n=16, size=8)
    config = TrainConfig(image_size=8, epochs=2, batch_size=8, progress=False,
                         arch_kwargs={"widths": (8, 16)})
    with caplog.at_level("INFO", logger="coopt_flower.training_loop"):
        result = train_on_optimized(ds, config)
    lines = [r.getMessage() for r in caplog.records if r.name == "coopt_flower.training_loop"]
    assert [line.split(":")[0] for line in lines] == ["coopt epoch 1/2", "coopt epoch 2/2"]
    assert f"loss {result.losses[1]:.4f}" in lines[1]
    assert capsys.readouterr().err == ""
