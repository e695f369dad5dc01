"""Student backbones from a name, in the spirit of ``timm.create_model``.

A *student* is the model a user trains on an optimized dataset. CoOpt's claim is
that any architecture can learn from the optimized data, so the factory accepts
any torchvision or timm model, plus two small CPU-friendly defaults.

Name forms accepted by :func:`create_student`:

``small-cnn``
    A four-block conv-bn-relu network with 256-d features, cheap enough to train on
    a CPU at 28-32 px; the default for tests and CPU runs.
``resnet18-small``
    ResNet-18 with the CIFAR stem (3x3 stride-1 first conv, no max-pool), the usual
    choice for 32 px images. 512-d features.
``vit-tiny-4x4``
    timm's VisionTransformer at ViT-Tiny width (192-d, 3 heads, 6 blocks) on a 4x4 grid
    of patches, a ViT small enough to train on a CPU. 192-d features.
``torchvision:<name>``
    Any model of ``torchvision.models.get_model`` (``torchvision:resnet18``,
    ``torchvision:mobilenet_v3_small``, ...). Its last ``nn.Linear`` (the classifier)
    is replaced by ``nn.Identity``.
``timm:<name>``
    Any ``timm.create_model`` name, built with ``num_classes=0`` so it returns
    pooled features.
any other registered name
    See :func:`register_student` and :func:`list_students`.

All forms live in one registry, :data:`STUDENTS` (:class:`coopt_flower.registry.Registry`);
an unknown name raises :class:`ValueError` listing the registered names and forms.

Every backbone maps a float batch ``(B, 3, H, W)`` to features ``(B, feature_dim)``
and carries the integer attribute ``feature_dim``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from coopt_flower.registry import Registry

__all__ = [
    "STUDENTS",
    "StudentWithHead",
    "StudentWithHeads",
    "SmallCNN",
    "create_student",
    "list_students",
    "register_student",
]

_Builder = Callable[..., nn.Module]

#: Plain names (``small-cnn``) map to ``fn(*, image_size, pretrained, **kwargs)``;
#: prefix families (``timm:NAME``) to ``fn(name, *, image_size, pretrained, **kwargs)``.
STUDENTS: Registry[_Builder] = Registry("student")


def register_student(name: str) -> Callable[[_Builder], _Builder]:
    """Register a builder ``fn(*, image_size, pretrained, **kwargs) -> nn.Module``.

    The returned module must set ``feature_dim``; if it does not, the factory
    measures it with one dummy forward pass.

    Parameters
    ----------
    name : str
        The name users pass to :func:`create_student`. Must not contain ``:``
        (that separator is reserved for the ``torchvision:`` / ``timm:`` forms).
        Registering a name again replaces the earlier builder.

    Raises
    ------
    ValueError
        Right away (not when the decorator is applied) for a name with ``:``.
    """
    return STUDENTS.register(name, replace=True)


def list_students() -> list[str]:
    """Names registered with :func:`register_student` (besides the prefixed forms)."""
    return STUDENTS.names()


# ---------------------------------------------------------------------------
# Built-in small students
# ---------------------------------------------------------------------------


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    # bias=False: the BatchNorm right after makes a conv bias redundant.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A few conv-bn-relu blocks and a global average pool.

    The first block keeps full resolution, each later one halves it, so a 32 px
    input ends at 4x4 before pooling. About 15 M multiply-adds per 32 px image.

    Parameters
    ----------
    widths : sequence of int
        Output channels of each block; the last one is ``feature_dim``.
    in_channels : int
        Input channels (3 for RGB; gray images are expected as 3 equal channels).
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256), in_channels: int = 3):
        super().__init__()
        if not widths:
            raise ValueError("widths must not be empty")
        blocks = []
        c_in = in_channels
        for i, c_out in enumerate(widths):
            blocks.append(_conv_bn_relu(c_in, c_out, stride=1 if i == 0 else 2))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = int(widths[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)

    def split_last_stage(self) -> tuple[nn.Module, nn.Module]:
        """``(prefix, stage)`` with ``stage(prefix(x)) == self(x)``: every block but the last,
        then the last block and the pooling (what ``refine-layers = last-stage`` trains, when
        this network is a participant's prototype). Both share this network's weights."""
        return self.features[:-1], nn.Sequential(self.features[-1], self.pool, nn.Flatten(1))


@register_student("small-cnn")
def _small_cnn(*, image_size: int, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    if pretrained:
        raise ValueError("small-cnn has no pretrained weights")
    return SmallCNN(**kwargs)


@register_student("resnet18-small")
def _resnet18_small(*, image_size: int, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    # The ImageNet stem (7x7 stride 2 + max-pool) shrinks a 32 px image to 8x8 before
    # the first residual stage; the CIFAR stem keeps 32x32 there, which is what makes
    # ResNet-18 competitive on small images.
    import torchvision

    if pretrained:
        raise ValueError(
            "resnet18-small changes the stem, so ImageNet weights do not fit; "
            "use 'torchvision:resnet18' with pretrained=True instead"
        )
    model = torchvision.models.resnet18(weights=None, **kwargs)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    return model


@register_student("vit-tiny-4x4")
def _vit_tiny_4x4(*, image_size: int, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    # timm's VisionTransformer at ViT-Tiny width (192-d, 3 heads) cut to small images: the
    # patch is a quarter of the image side, so any input is a 4x4 grid of 16 tokens (plus the
    # class token), and 6 blocks instead of ViT-Ti's 12. ViT-Ti/4 (64 tokens, 12 blocks) costs
    # about 8x more per image, too much for a CPU benchmark; kwargs override any of these.
    import timm

    if pretrained:
        raise ValueError("vit-tiny-4x4 has no pretrained weights (its patch size depends on "
                         "image_size); use 'timm:<vit name>' with pretrained=True instead")
    if image_size % 4:
        raise ValueError(f"vit-tiny-4x4 needs an image side divisible by 4, got {image_size}")
    config = dict(img_size=image_size, patch_size=image_size // 4, embed_dim=192, depth=6,
                  num_heads=3, num_classes=0)
    config.update(kwargs)
    return timm.models.vision_transformer.VisionTransformer(**config)


# ---------------------------------------------------------------------------
# torchvision / timm
# ---------------------------------------------------------------------------


def strip_classifier(model: nn.Module, name: str) -> nn.Module:
    """Replace the last ``nn.Linear`` in module order (the classifier) by Identity.

    torchvision names its classifier differently per family (``fc``,
    ``classifier[-1]``, ``heads.head``, ``head``); the last Linear is the common
    denominator.
    """
    last = None
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last = mod_name
    if last is None:
        raise ValueError(
            f"torchvision:{name} has no nn.Linear classifier to remove; "
            "use the timm: form or register a custom builder"
        )
    parent_name, _, child = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())
    return model


@STUDENTS.register(
    "torchvision", prefix=True, forms=("torchvision:<model name> (e.g. torchvision:resnet18)",)
)
def _torchvision_student(name: str, *, image_size: int, pretrained: bool, **kwargs: Any) -> nn.Module:
    # image_size is not a torchvision constructor argument; create_student checks the
    # built model at that size afterwards.
    import torchvision

    available = set(torchvision.models.list_models())
    if name not in available:
        raise ValueError(
            f"unknown torchvision model {name!r}; see torchvision.models.list_models()"
        )
    # Inception/GoogLeNet add auxiliary classifiers in training mode; a feature
    # extractor does not want them.
    if name in ("inception_v3", "googlenet"):
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", True)
    weights = "DEFAULT" if pretrained else None
    model = torchvision.models.get_model(name, weights=weights, **kwargs)
    return strip_classifier(model, name)


@STUDENTS.register("timm", prefix=True, forms=("timm:<model name> (e.g. timm:resnet18)",))
def _timm_student(name: str, *, image_size: int, pretrained: bool, **kwargs: Any) -> nn.Module:
    # image_size is checked on the built model by create_student, as for torchvision.
    import timm

    # hf-hub:/local-dir: names are resolved by timm itself and cannot be checked here.
    if not name.startswith(("hf-hub:", "hf_hub:", "local-dir:")) and not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}; see timm.list_models()")
    # num_classes=0 makes timm return pooled (pre-logits) features.
    return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)


@torch.no_grad()
def _measure_feature_dim(model: nn.Module, image_size: int, arch: str,
                         device: torch.device | str = "cpu") -> int:
    # A dummy forward is the only architecture-agnostic way to know the output
    # size, and it also catches models that cannot run at this image size early,
    # with a clear message instead of a shape error deep inside training.
    was_training = model.training
    model.eval()
    try:
        out = model(torch.zeros(2, 3, image_size, image_size, device=device))
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"student {arch!r} cannot run on {image_size}x{image_size} inputs: {exc} "
            "(models with a fixed input size take it as a constructor argument, "
            "e.g. create_student('timm:vit_tiny_patch16_224', image_size=32, img_size=32) "
            "or image_size=32 for torchvision ViTs)"
        ) from exc
    finally:
        model.train(was_training)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.dim() != 2:
        raise ValueError(
            f"student {arch!r} returns features of shape {tuple(out.shape)}; "
            "expected (batch, feature_dim)"
        )
    return int(out.shape[1])


def create_student(
    arch: str, *, image_size: int, pretrained: bool = False,
    device: torch.device | str | None = None, **kwargs: Any
) -> nn.Module:
    """Build a student backbone from a name.

    Parameters
    ----------
    arch : str
        ``small-cnn``, ``resnet18-small``, another registered name,
        ``torchvision:<name>`` or ``timm:<name>`` (see the module docstring).
    image_size : int
        Side of the square inputs the student will see. Used to check that the
        model runs at that size and to measure ``feature_dim``.
    pretrained : bool
        Load the library's default pretrained weights (torchvision ``DEFAULT``
        weights, timm's ``pretrained=True``). This downloads from the internet on
        first use; the default ``False`` never touches the network.
    device : torch.device or str, optional
        Where the model goes before its feature size is measured (a dummy forward), so a
        large model is not first run on the CPU; the weights are drawn on the CPU either way,
        so a seed gives the same student on every device. Default: stays on the CPU.
    **kwargs
        Passed to the model constructor (e.g. ``img_size=32`` for timm ViTs,
        ``widths=(32, 64, 128)`` for ``small-cnn``).

    Returns
    -------
    nn.Module
        Backbone mapping ``(B, 3, image_size, image_size)`` floats to
        ``(B, feature_dim)``, with the integer attribute ``feature_dim``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the accepted forms) or a model that
        cannot run at ``image_size``.
    """
    if not isinstance(arch, str) or not arch:
        raise ValueError(f"arch must be a non-empty string, got {arch!r}")
    model = STUDENTS.create(arch, image_size=image_size, pretrained=pretrained, **kwargs)
    if device is not None:
        model = model.to(device)
    measured = _measure_feature_dim(model, image_size, arch,
                                    device=next(model.parameters(), torch.empty(0)).device)
    declared = getattr(model, "feature_dim", None)
    if declared is not None and int(declared) != measured:
        raise ValueError(
            f"student {arch!r} declares feature_dim={declared} but returns {measured}"
        )
    model.feature_dim = measured
    return model


class StudentWithHead(nn.Module):
    """Backbone followed by a linear head: ``head(backbone(x))``.

    Used both for CoOpt (head to the target dimension ``n``) and for the
    supervised ceiling (head to the number of classes).

    Parameters
    ----------
    backbone : nn.Module
        A student from :func:`create_student` (must have ``feature_dim``).
    target_dim : int
        Output dimension of the head.
    """

    def __init__(self, backbone: nn.Module, target_dim: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(int(backbone.feature_dim), int(target_dim))
        self.feature_dim = int(backbone.feature_dim)
        self.target_dim = int(target_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class StudentWithHeads(nn.Module):
    """One shared backbone, one linear target head per participant (``merge = "heads"``).

    Every participant's targets live in its own space; sample ``i`` owned by ``k`` trains
    ``heads[k](backbone(x_i))`` only. The heads are linear, like :class:`StudentWithHead`'s,
    so the heads row differs from the aligned row in the merge alone, and so any head
    alone is a ``StudentWithHead`` head (a student prototype exposes one, see
    :mod:`coopt_flower.refinement`). A linear head also keeps every participant's space a
    linear read-out of the backbone's features, which is what a linear probe later uses.

    Parameters
    ----------
    backbone : nn.Module
        A student from :func:`create_student` (must have ``feature_dim``).
    target_dim : int
        Output dimension of every head.
    num_heads : int
        One per participant (``owners`` index them).
    exposed_head : int
        The head :meth:`forward` uses when no owners are given and that :attr:`head` returns.
    """

    def __init__(self, backbone: nn.Module, target_dim: int, num_heads: int, exposed_head: int = 0):
        super().__init__()
        if num_heads < 1 or not 0 <= exposed_head < num_heads:
            raise ValueError(f"need num_heads >= 1 and 0 <= exposed_head < num_heads, got "
                             f"{num_heads} and {exposed_head}")
        self.backbone = backbone
        self.heads = nn.ModuleList(nn.Linear(int(backbone.feature_dim), int(target_dim))
                                   for _ in range(int(num_heads)))
        self.feature_dim = int(backbone.feature_dim)
        self.target_dim = int(target_dim)
        self.exposed_head = int(exposed_head)

    @property
    def head(self) -> nn.Module:
        """The exposed head (the reference participant's)."""
        return self.heads[self.exposed_head]

    def forward(self, x: torch.Tensor, owners: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, target_dim)``: row ``i`` through ``heads[owners[i]]`` (the exposed head when
        ``owners`` is None)."""
        features = self.backbone(x)
        if owners is None:
            return self.head(features)
        owners = owners.to(features.device, torch.long)
        out = features.new_zeros(len(features), self.target_dim)
        # Only the heads of owners in the batch run: the others get no gradient at all (None,
        # so AdamW leaves them alone: no weight decay or stale momentum from this step).
        for k in torch.unique(owners).tolist():
            rows = owners == k
            out[rows] = self.heads[k](features[rows]).to(out.dtype)
        return out

    def all_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, num_heads, target_dim)``: every head's output (``merge = "multi-teacher"``
        trains every head on every sample)."""
        features = self.backbone(x)
        return torch.stack([head(features) for head in self.heads], dim=1)
