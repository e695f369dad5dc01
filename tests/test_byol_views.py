"""BYOL's own views (coopt_flower.byol_views): blur, solarization, and two asymmetric pipelines."""

import numpy as np
import pytest
import torch

from coopt_flower.byol_views import BYOL_VIEWS, ByolViews, gaussian_blur, solarize


def test_blur_keeps_the_mean_and_smooths_and_p_zero_is_the_identity():
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    blurred = gaussian_blur(x, (1.5, 1.5), p=1.0, kernel_size=7, generator=torch.Generator().manual_seed(1))
    assert blurred.shape == x.shape
    torch.testing.assert_close(blurred.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.02, rtol=0)
    roughness = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()  # noqa: E731
    assert roughness(blurred) < 0.5 * roughness(x)
    assert gaussian_blur(x, (1.5, 1.5), p=0.0, kernel_size=7) is x
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[0, 0, 4, 4] = 1.0
    out = gaussian_blur(impulse, (1.0, 1.0), p=1.0, kernel_size=5)[0, 0]
    assert abs(float(out.sum()) - 1.0) < 1e-6 and torch.allclose(out, out.T)  # normalized, separable


def test_solarize_inverts_only_the_bright_pixels_of_the_chosen_images():
    x = torch.tensor([0.2, 0.5, 0.9]).view(1, 1, 1, 3).repeat(2, 1, 1, 1)
    out = solarize(x, p=1.0)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.2, 0.5, 0.1]))
    assert solarize(x, p=0.0) is x


def test_the_two_views_differ_as_the_paper_says_and_are_seeded():
    views = ByolViews(32)
    first, second = views.per_view
    assert (first.blur_p, first.solarize_p) == (1.0, 0.0) and (second.blur_p, second.solarize_p) == (0.1, 0.2)
    assert first.kernel_size % 2 == 1 and first.sigma[1] == pytest.approx(2.0 * 32 / 224)
    assert ByolViews.named("byol-noblur", 32).per_view[0].blur_p == 0.0
    assert ByolViews.named("shared", 32) is None and set(BYOL_VIEWS) == {"shared", "byol", "byol-noblur"}
    with pytest.raises(ValueError, match="unknown BYOL views"):
        ByolViews.named("simclr", 32)
    images = torch.randint(0, 256, (6, 3, 28, 28), dtype=torch.uint8)
    a = first(images, generator=torch.Generator().manual_seed(3))
    b = first(images, generator=torch.Generator().manual_seed(3))
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b)


def test_byol_trains_with_its_own_views(tmp_path):
    from coopt_flower.byol import train_byol
    from coopt_flower.training_loop import TrainConfig

    images = np.random.default_rng(0).integers(0, 256, (32, 28, 28, 3), dtype=np.uint8)
    config = TrainConfig(arch="small-cnn", image_size=16, epochs=1, batch_size=16, augment=ByolViews(16),
                         checkpoint_dir=tmp_path, progress=False)
    result = train_byol(images, config, hidden_dim=32, proj_dim=16)
    assert np.isfinite(result.losses).all()
    record = torch.load(tmp_path / "last.pt", weights_only=False)["config"]
    assert record["views_augment"] == "ByolViews(image_size=16, blur=True)"
