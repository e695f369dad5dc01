"""Tests for the timm, torchvision and open_clip hub families and for plugin families.

Everything runs offline: random init, local checkpoints written by the test, an open_clip
model directory, a Hugging Face cache laid out the way huggingface_hub reads it offline, and a
plugin package made of a module and its dist-info on sys.path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from coopt_flower import prototypes as P
from coopt_flower.prototypes import UnknownPrototypeError, create_prototype, parse_prototype_spec
# The tiny open_clip architecture and the one-thread fixture of the prototype tests (autouse here too).
from tests.test_prototypes import TINY_CLIP_CONFIG as TINY, _one_thread  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def _images(n: int, size: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


@pytest.mark.parametrize(("spec", "expected"), [
    ("timm:resnet18", ("timm", "resnet18", "pretrained")),
    ("timm:resnet50.a1_in1k", ("timm", "resnet50.a1_in1k", "pretrained")),
    ("timm:resnet18@/w/r18.safetensors", ("timm", "resnet18", "/w/r18.safetensors")),
    ("timm:hf-hub:timm/resnet18.a1_in1k", ("timm", "hf-hub:timm/resnet18.a1_in1k", "pretrained")),
    ("torchvision:resnet18", ("torchvision", "resnet18", "DEFAULT")),
    ("torchvision:resnet18/IMAGENET1K_V1", ("torchvision", "resnet18", "IMAGENET1K_V1")),
    ("torchvision:resnet18@/w/r18.pth", ("torchvision", "resnet18", "/w/r18.pth")),
    ("random:timm:resnet18", ("random", "timm:resnet18", None)),
    ("random:torchvision:mobilenet_v3_small", ("random", "torchvision:mobilenet_v3_small", None)),
    ("open_clip:hf-hub:org/repo", ("open_clip", "hf-hub:org/repo", "hf-hub")),
    ("open_clip:local-dir:/m/clip", ("open_clip", "local-dir:/m/clip", "local-dir")),
])
def test_parse_new_family_forms(spec, expected):
    parsed = parse_prototype_spec(spec)
    assert (parsed.family, parsed.name, parsed.weights) == expected


@pytest.mark.parametrize(("spec", "error", "hint"), [
    ("timm:resnet19", UnknownPrototypeError, "did you mean 'resnet18'"),
    ("torchvision:resnet19", UnknownPrototypeError, "did you mean 'resnet18'"),
    ("torchvision:mobilenet_v3_smal", UnknownPrototypeError, "did you mean 'mobilenet_v3_small'"),
    ("torchvision:resnet18/IMAGENET1K_V3", ValueError, "known: IMAGENET1K_V1, DEFAULT"),
    ("timm:resnet18@", ValueError, "empty checkpoint path"),
    ("random:timm:resnet18@/x.pth", ValueError, "without weights"),
    ("random:torchvision:resnet18/DEFAULT", ValueError, "without weights"),
    ("random:open_clip:hf-hub:org/repo", ValueError, "brings its own weights"),
    ("open_clip:hf-hub:", ValueError, "nothing after"),
])
def test_bad_new_family_specs_say_what_to_fix(spec, error, hint):
    with pytest.raises(error, match=None) as err:
        parse_prototype_spec(spec)
    assert hint in str(err.value)


@pytest.mark.parametrize("family", ["timm", "torchvision"])
def test_local_checkpoint_loads_the_saved_weights(tmp_path, family):
    import timm
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(7)
    if family == "timm":
        model = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
        path = tmp_path / "r18.safetensors"
        save_file(model.state_dict(), str(path))
    else:  # a full torchvision state dict, classifier included, as torchvision saves it
        model = torchvision.models.resnet18(weights=None).eval()
        path = tmp_path / "r18.pth"
        torch.save(model.state_dict(), path)
        model.fc = torch.nn.Identity()
    proto = create_prototype(f"{family}:resnet18@{path}", image_size=32)
    assert (proto.output_dim, proto.native_size, proto.image_size) == (512, 224, 32)
    images = _images(3)
    with torch.inference_mode():
        expected = model(P.preprocess_batch(images, 32, proto.preprocess, "cpu")).numpy()
    np.testing.assert_allclose(proto.encode(images), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_prototype(f"{family}:resnet18@{tmp_path}/missing.pth", image_size=32)


def test_torchvision_checkpoint_of_another_architecture_is_refused(tmp_path):
    import torchvision

    path = tmp_path / "mnv3.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="not a state dict of resnet18"):
        create_prototype(f"torchvision:resnet18@{path}", image_size=32)


@pytest.mark.parametrize("spec", ["random:timm:resnet18", "random:torchvision:resnet18",
                                  "random:timm:vit_tiny_patch16_224"])
def test_random_init_is_deterministic_and_runs_at_small_sizes(spec):
    a, b = create_prototype(spec, image_size=32), create_prototype(spec, image_size=32)
    feats = a.encode(_images(2))
    np.testing.assert_array_equal(feats, b.encode(_images(2)))
    assert feats.shape == (2, a.output_dim) and np.isfinite(feats).all() and np.abs(feats).mean() > 1e-4
    assert a.native_size == 224 and a.spec == spec


def test_preprocessing_comes_from_the_weights_config():
    tv = create_prototype("random:torchvision:resnet18", image_size=32)  # DEFAULT weights' transform
    assert tv.preprocess.crop_fraction == pytest.approx(224 / 256)
    assert tv.preprocess.mean == pytest.approx((0.485 * 255, 0.456 * 255, 0.406 * 255))
    vit = create_prototype("random:timm:vit_tiny_patch16_224", image_size=32)
    assert vit.preprocess.mean == pytest.approx((127.5,) * 3) and vit.preprocess.interpolation == "bicubic"




def _open_clip_dir(root: Path) -> Path:
    """An open_clip model directory (config + weights) as open_clip writes for the Hub."""
    import open_clip
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    (root / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY, "preprocess_cfg": {}}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        name = "coopt-test-hub-vit"
        config = root.parent / f"{name}.json"
        config.write_text(json.dumps(TINY))
        open_clip.add_model_config(config)
        model = open_clip.create_model(name).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "open_clip_model.safetensors"))
    return root


def test_open_clip_local_dir_loads_its_weights(tmp_path):
    directory = _open_clip_dir(tmp_path / "model")
    proto = create_prototype(f"open_clip:local-dir:{directory}")
    assert (proto.output_dim, proto.native_size) == (16, 32)
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        create_prototype(f"open_clip:local-dir:{tmp_path}/nowhere")
    (directory / "open_clip_model.safetensors").unlink()  # no weights: refused, not random
    with pytest.raises(Exception, match="(?i)pretrained|weights"):
        create_prototype(f"open_clip:local-dir:{directory}")


def test_open_clip_hf_hub_reads_an_offline_hub_cache(tmp_path):
    # The layout huggingface_hub resolves with HF_HUB_OFFLINE=1: refs/main names the snapshot.
    repo = tmp_path / "hub" / "models--coopt-test--tiny-clip"
    (repo / "refs").mkdir(parents=True)
    commit = "0" * 40
    (repo / "refs" / "main").write_text(commit)
    _open_clip_dir(repo / "snapshots" / commit)
    code = textwrap.dedent("""
        import numpy as np
        from coopt_flower.prototypes import create_prototype
        p = create_prototype("open_clip:hf-hub:coopt-test/tiny-clip")
        print(p.output_dim, p.native_size, p.encode(np.zeros((2, 32, 32, 3), np.uint8)).shape)
        try:
            create_prototype("open_clip:hf-hub:coopt-test/absent")
        except RuntimeError as err:
            print("refused:", err)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "16 32 (2, 16)"
    assert "refused: open_clip:hf-hub:coopt-test/absent: could not fetch" in lines[1]
    assert "local-dir" in lines[1]


def test_a_plugin_package_registers_a_family_through_its_entry_point(tmp_path, monkeypatch):
    (tmp_path / "coopt_test_plugin.py").write_text(textwrap.dedent("""
        import numpy as np
        from coopt_flower.prototypes import Preprocess, Prototype, register_family

        class Ones(Prototype):
            def __init__(self, parsed):
                self.spec, self.parsed, self.output_dim = parsed.raw, parsed, 3
                self.native_size = self.image_size = 8
                self.device, self.preprocess = "cpu", Preprocess(mean=(0, 0, 0), std=(1, 1, 1))

            def _encode_batch(self, images):
                return np.ones((len(images), 3), np.float32)

        @register_family("coopt-test-plugin", parse=lambda body: (body, "none"), forms=("coopt-test-plugin:X",))
        def build(spec, size, device):
            return Ones(spec)
    """))
    dist = tmp_path / "coopt_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: coopt-test-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{P.ENTRY_POINT_GROUP}]\nones = coopt_test_plugin\n"
                                           "broken = coopt_test_no_such_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.warns(RuntimeWarning, match="'broken'.*failed to load"):
            loaded = P.load_plugin_families()
        assert loaded == ["ones"]
        assert "coopt-test-plugin:X" in P.available_prototypes()
        np.testing.assert_array_equal(create_prototype("coopt-test-plugin:a").encode(_images(2)), np.ones((2, 3)))
    finally:
        if "coopt-test-plugin" in P.PROTOTYPE_FAMILIES:
            P.PROTOTYPE_FAMILIES.unregister("coopt-test-plugin", prefix=True)
        sys.modules.pop("coopt_test_plugin", None)
