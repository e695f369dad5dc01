"""A CoOpt participant without Flower: runs its prototype over images and answers requests.

:class:`PrototypeParticipant` answers the two requests of :mod:`coopt_flower.protocol`
(describe itself; encode the shared subset or a page of ids into projected targets). The
ClientApp is a thin Flower shell around it, and :func:`coopt_flower.engine.run_in_process`
drives the same objects without Flower. Every answer is stateless apart from the round's
student, which the caller keeps and hands back (the Flower shell keeps it in the node's
context state), so pages can be retried or reassigned to another participant.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from typing import Any

import numpy as np

from coopt_flower.data import decode_images, open_source
from coopt_flower.devices import default_device
from coopt_flower.protocol import Description, EncodeConfig, EncodeReply, EncodeRequest, pixels_digest
from coopt_flower.round_student import payload_digest
from coopt_flower.targets import compute_targets


@functools.lru_cache(maxsize=4)
def load_prototype(spec: str, image_size: int, device: str, precision: str = "fp32"):
    """Prototypes are built once per process: a Flower ClientApp object lives for one message."""
    from coopt_flower.prototypes import PRECISIONS, create_prototype

    prototype = create_prototype(spec, image_size=image_size or None, device=device)
    if precision != "fp32":
        if precision not in PRECISIONS or not hasattr(prototype, "precision"):
            raise ValueError(f"node config precision must be one of {', '.join(PRECISIONS)} "
                             f"(mixed precision needs a torch prototype), got {precision!r}")
        prototype.precision = precision
    return prototype


_STUDENTS: dict[tuple[str, str], Any] = {}


def load_student(student: tuple[Any, dict[str, Any]] | None, device: str):
    """The round's student as a prototype (built once per process and digest).

    ``student`` is ``(weights, config)``; ``weights`` may be a callable returning the weights,
    so that a caller holding them serialized (the ClientApp's node state) deserializes them
    only when this process has not built the student yet, not for every page.
    """
    from coopt_flower.round_student import student_from_payload

    if student is None:
        raise RuntimeError("asked to encode with the student, but no student was received "
                           "with this round's shared subset")
    state, config = student
    key = (str(config.get("digest")), device)
    if key not in _STUDENTS:
        _STUDENTS.clear()  # one student per round: drop the previous round's
        _STUDENTS[key] = student_from_payload(state() if callable(state) else state, config, device=device)
    return _STUDENTS[key]


#: Refined prototypes this process holds, by head digest (most recent last; a few rounds' worth).
_REFINED: dict[str, Any] = {}
_REFINED_KEPT = 8


def load_refined(digest: str, refined: tuple[Any, dict[str, Any]] | None, base):
    """The refined prototype of ``digest``: built in this process, or rebuilt on ``base`` from
    ``refined`` = ``(weights, config)`` (a callable may stand for the weights, as for
    :func:`load_student`) that the node kept from its shared-subset request."""
    from coopt_flower.distill import RefinedPrototype

    if digest in _REFINED:
        return _REFINED[digest]
    if refined is None or str(refined[1].get("digest")) != digest:
        raise RuntimeError(f"asked to encode with refined prototype {digest}, which this node does not "
                           "hold (it refines on the round's shared subset)")
    state, config = refined
    return remember_refined(RefinedPrototype(base, state() if callable(state) else state, config))


def remember_refined(prototype):
    _REFINED[prototype.digest] = prototype
    while len(_REFINED) > _REFINED_KEPT:
        _REFINED.pop(next(iter(_REFINED)))
    return prototype


@dataclass
class NodeSettings:
    """What a participant's own machine decides (a SuperNode's node config).

    Parameters
    ----------
    prototype : str
        Prototype spec (see :func:`coopt_flower.prototypes.create_prototype`).
    device : str
        Where to encode (default: CUDA when available).
    precision : str
        ``fp32``, or on a GPU ``bf16`` / ``fp16`` autocast.
    batch_size : int
        Encode batch size (0 = the platform's).
    data : str
        Where this node keeps its copy of the platform's data ("" = the platform's spec).
    local_data : str
        Images only this node holds ("" = none).
    partition_id : int
        Simulation partition (-1 in deployment unless set), for a stable participant order.
    slot : int
        Which participant of the run this is (:mod:`coopt_flower.hosting`; -1: the node's
        own prototype, as in deployment).
    num_partitions : int
        Size of the simulated federation (0 when unknown, as in deployment).
    share_local_images : bool
        Whether this node lets its ``local_data`` images leave it when the platform asks
        (``upload-local-images``); False: only their targets are ever sent.
    """

    prototype: str
    device: str = ""
    precision: str = "fp32"
    batch_size: int = 0
    data: str = ""
    local_data: str = ""
    partition_id: int = -1
    slot: int = -1
    num_partitions: int = 0
    share_local_images: bool = True

    def __post_init__(self) -> None:
        self.device = self.device or default_device()


def _image_bytes(source) -> int:
    """Bytes of one image of ``source`` (the first that decodes among its first 64), to size
    upload pages; 0 when none of them decodes."""
    pixels, _, _ = decode_images(source, np.arange(min(len(source), 64), dtype=np.int64))
    return int(pixels[0].nbytes) if len(pixels) else 0


class PrototypeParticipant:
    """Answers the platform's requests with its own prototype (or the round's student)."""

    def __init__(self, node: NodeSettings) -> None:
        self.node = node
        #: ``(weights, config)`` of the head this participant refined last (its node keeps it).
        self.refined_payload: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None

    def _local_source(self):
        return open_source(self.node.local_data)

    def describe(self, config: EncodeConfig) -> Description:
        """What this participant runs (builds its prototype, so a bad spec fails here)."""
        import torch

        node = self.node
        prototype = load_prototype(node.prototype, config.image_size, node.device, node.precision)
        local = self._local_source() if node.local_data else None
        return Description(
            prototype=node.prototype, output_dim=int(prototype.output_dim),
            native_size=int(prototype.native_size), image_size=int(prototype.image_size),
            device=node.device, precision=node.precision, partition_id=node.partition_id,
            slot=node.slot, num_partitions=node.num_partitions,
            local_data=node.local_data, local_samples=len(local) if local is not None else 0,
            local_image_bytes=_image_bytes(local) if local is not None else 0,
            share_local_images=node.share_local_images, torch=torch.__version__, python=platform.python_version())

    def refine(self, request: EncodeRequest, student):
        """Refine this participant's prototype towards the round's student on S and its shard
        sample (``refine-ids``; :func:`coopt_flower.distill.refine_prototype`)."""
        from coopt_flower.distill import refine_prototype

        node, config = self.node, request.config
        if student is None:
            raise RuntimeError("asked to refine towards the round's student, but no student came with "
                               "the shared subset")
        base = load_prototype(node.prototype, config.image_size, node.device, node.precision)
        images = [request.pixels]
        if request.refine_ids is not None and len(request.refine_ids):
            # Images of the shard sample that do not decode are left out (pages report them).
            images.insert(0, decode_images(open_source(node.data or config.data), request.refine_ids)[0])
        refinement = refine_prototype(base, load_student(student, node.device), images,
                                      config.refine_budget(), seed=config.refine_seed,
                                      batch_size=node.batch_size or config.batch_size)
        self.refined_payload = (refinement.state, refinement.config)
        remember_refined(refinement.prototype)
        return refinement

    def encode(self, request: EncodeRequest,
               student: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None,
               refined: tuple[Any, dict[str, Any]] | None = None) -> EncodeReply:
        """Projected targets of the shared subset (pixels) or of a page of ids.

        ``student`` is the round's student, received with the shared subset; it is used for
        ``encoder = "student"`` pages and, on the shared subset, to return the student's own
        embeddings of S as well. Under ``refinement = distill`` the shared subset is encoded
        after refining (:meth:`refine`); ``refined`` is that head as the node kept it, for
        ``encoder = "refined"`` pages answered by another process.
        """
        node, config = self.node, request.config
        student = request.student or student
        refinement = None
        if config.encoder == "student":
            prototype = load_student(student, node.device)
        elif config.encoder == "refined":
            prototype = load_refined(config.refined, refined or self.refined_payload,
                                     load_prototype(node.prototype, config.image_size, node.device,
                                                    node.precision))
        elif request.pixels is not None and config.refine_epochs:
            refinement = self.refine(request, student)
            prototype = refinement.prototype
        else:
            prototype = load_prototype(node.prototype, config.image_size, node.device, node.precision)
        kwargs = dict(target_dim=config.target_dim, projection_seed=config.projection_seed,
                      batch_size=node.batch_size or config.batch_size)
        extra: dict[str, np.ndarray] = {}
        digest, bad, student_digest = "", [], ""
        if request.pixels is not None:
            pixels = request.pixels
            digest = pixels_digest(pixels)
            targets, stats = compute_targets(prototype, pixels, None, desc="shared subset", **kwargs)
            ids = np.full(len(pixels), -1, dtype=np.int64)
            if request.student is not None:
                extra["student-targets"], _ = compute_targets(
                    load_student(student, node.device), pixels, None,
                    desc="shared subset (student)", **kwargs)
                student_digest = payload_digest(request.student[0])  # of what arrived
        else:
            # Images that cannot be decoded are the data's fault: skipped and reported, so
            # the page (and this participant) does not fail for them.
            ids = request.ids
            source = self._local_source() if config.scope == "local" else open_source(node.data or config.data)
            # The node's consent decides, whatever the request asks (its images are private).
            if config.scope == "local" and config.upload_images and node.share_local_images:
                pixels, ids, bad = decode_images(source, ids)  # decoded once: uploaded and encoded
                extra["pixels"] = pixels
                targets, stats = compute_targets(prototype, pixels, None, desc="shard page", **kwargs)
            else:
                targets, stats = compute_targets(prototype, source, ids, desc="shard page",
                                                 bad_samples=bad, **kwargs)
                if bad:
                    ids = ids[~np.isin(ids, [b.sample_id for b in bad])]
        return EncodeReply(targets=targets, ids=ids, encode_seconds=stats.seconds,
                           num_images=stats.num_images, prototype=node.prototype,
                           encoder=prototype.spec, pixels_sha256=digest,
                           student_digest=student_digest, extra=extra,
                           bad_samples=[b.as_dict() for b in bad],
                           refined_digest=refinement.prototype.digest if refinement else "",
                           refine_seconds=refinement.seconds if refinement else 0.0)
