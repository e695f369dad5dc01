"""Student factory: every name form builds, reports feature_dim, and bad names fail clearly."""

import pytest
import torch
from torch import nn

from coopt_flower.students import (
    SmallCNN,
    StudentWithHead,
    create_student,
    list_students,
    register_student,
)


@pytest.mark.parametrize(
    "arch, dim",
    [
        ("small-cnn", 256),
        ("resnet18-small", 512),
        ("torchvision:resnet18", 512),
        ("torchvision:mobilenet_v3_small", 1024),
        ("timm:resnet18", 512),
        ("vit-tiny-4x4", 192),
    ],
)
def test_each_name_form_builds_with_feature_dim(arch, dim):
    torch.manual_seed(0)
    model = create_student(arch, image_size=32)
    assert model.feature_dim == dim
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, dim)


def test_resnet18_small_keeps_resolution_in_the_stem():
    model = create_student("resnet18-small", image_size=32)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)


def test_vit_tiny_4x4_is_a_4x4_token_grid_at_any_size():
    for size in (32, 64):
        model = create_student("vit-tiny-4x4", image_size=size)
        assert model.patch_embed.grid_size == (4, 4) and len(model.blocks) == 6
    assert len(create_student("vit-tiny-4x4", image_size=32, depth=2).blocks) == 2
    with pytest.raises(ValueError, match="divisible by 4"):
        create_student("vit-tiny-4x4", image_size=30)
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_student("vit-tiny-4x4", image_size=32, pretrained=True)


def test_small_cnn_widths_and_kwargs():
    model = create_student("small-cnn", image_size=16, widths=(8, 16, 24))
    assert isinstance(model, SmallCNN)
    assert model.feature_dim == 24
    assert model(torch.randn(3, 3, 16, 16)).shape == (3, 24)


@pytest.mark.parametrize(
    "arch",
    ["no-such-net", "bogus:resnet18", "torchvision:no_such_model", "timm:no_such_model", "timm:", ""],
)
def test_unknown_names_raise_value_error(arch):
    with pytest.raises(ValueError) as err:
        create_student(arch, image_size=32)
    msg = str(err.value)
    assert "unknown" in msg or "missing" in msg or "non-empty" in msg


def test_unknown_name_message_lists_the_forms():
    with pytest.raises(ValueError, match=r"torchvision:<model name>.*timm:<model name>"):
        create_student("no-such-net", image_size=32)
    with pytest.raises(ValueError, match="small-cnn"):
        create_student("no-such-net", image_size=32)


def test_model_that_cannot_run_at_the_size_gives_a_clear_error():
    with pytest.raises(ValueError, match="cannot run on 32x32"):
        create_student("torchvision:vit_b_16", image_size=32)


def test_pretrained_small_cnn_is_refused_without_network():
    with pytest.raises(ValueError, match="no pretrained"):
        create_student("small-cnn", image_size=32, pretrained=True)


def test_register_custom_student():
    @register_student("test-mlp")
    def _build(*, image_size, pretrained=False):
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, 7))

    assert "test-mlp" in list_students()
    model = create_student("test-mlp", image_size=8)
    assert model.feature_dim == 7  # measured, the builder did not set it
    with pytest.raises(ValueError):
        register_student("has:colon")


def test_student_with_head():
    backbone = create_student("small-cnn", image_size=16, widths=(8, 16))
    model = StudentWithHead(backbone, 5)
    assert model.head.in_features == 16 and model.head.out_features == 5
    assert model(torch.randn(4, 3, 16, 16)).shape == (4, 5)


def test_the_feature_size_is_measured_on_the_students_device():
    # On the meta device a forward computes shapes only: a CPU-side probe would fail here.
    model = create_student("small-cnn", image_size=32, device="meta")
    assert next(model.parameters()).device.type == "meta"
    assert model.feature_dim == create_student("small-cnn", image_size=32).feature_dim
