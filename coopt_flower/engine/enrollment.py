"""Enrollment, the round's first two steps: who takes part, and what each sees of S.

1. **describe**: :func:`enroll` describes nodes as they connect, until every expected
   participant is known (or the simulated federation has been heard from whole, or
   ``node-wait-s`` runs out), then :func:`name_participants` orders them (slot, then partition
   id, then node id) and names them ``p0, p1, ...``. A node may host several participants
   (:mod:`coopt_flower.hosting`); every request names the one that is to answer.
2. **shared subset**: :func:`shared_requests` asks everyone to encode the same images of S,
   sent as pixels (nodes may hold only their own data), with the refined student if there is
   one; :func:`accept_shared` keeps the participants whose replies pass the checks and
   returns their embeddings of S (and the student's, which every participant must agree on).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from coopt_flower.engine.failures import FailureLog, RoundFailed, check_survivors
from coopt_flower.engine.transport import Described, Reply, Student, Transport
from coopt_flower.hosting import federation_complete
from coopt_flower.protocol import (Description, EncodeConfig, EncodeReply, EncodeRequest, ReplyRefused,
                                   check_reply_targets, pixels_digest, reply_limit)
from coopt_flower.refinement import embedding_tolerance, relative_difference

log = logging.getLogger(__name__)


@dataclass
class Participant:
    """What the platform knows about one participant in this round."""

    name: str
    node_id: int
    prototype: str = "?"
    output_dim: int = 0
    image_size: int = 0
    device: str = "?"
    precision: str = "fp32"  # fp32, or bf16 / fp16 autocast on a GPU
    partition_id: int = -1
    slot: int = -1           # which participant of its node (-1: the node's own prototype)
    num_samples: int = 0
    encode_seconds: float = 0.0
    encoded_images: int = 0
    shared_sha256: str = ""
    encoder: str = "own"
    local_data: str = ""     # node-local images only this participant holds ("" = none)
    local_count: int = 0
    local_base: int = -1     # global sample id of its first local image
    local_image_bytes: int = 0
    share_local_images: bool = True  # its node's consent to upload its local images
    label_counts: list[int] | None = None  # its shard's samples per class (labels known only to simulate)
    refined_digest: str = ""  # distill: the refined head it encodes this round with ("" = its own)
    refine_seconds: float = 0.0

    @classmethod
    def from_description(cls, node_id: int, info: Description) -> Participant:
        return cls(name="", node_id=node_id, prototype=info.prototype, output_dim=info.output_dim,
                   image_size=info.image_size, device=info.device, precision=info.precision,
                   partition_id=info.partition_id, slot=info.slot,
                   local_data=info.local_data, local_count=info.local_samples,
                   local_image_bytes=info.local_image_bytes, share_local_images=info.share_local_images)

    def is_local(self, ids: np.ndarray) -> bool:
        """Whether a page of global ids is this participant's node-local data."""
        return self.local_count > 0 and len(ids) > 0 and int(ids[0]) >= self.local_base

    @property
    def local_images_file(self) -> str:
        return f"local_images_{self.name}.npy"

    def count_encoding(self, reply: EncodeReply) -> None:
        """Add a reply's encode time and images to this participant's throughput."""
        self.encode_seconds += reply.encode_seconds
        self.encoded_images += reply.num_images


# --------------------------------------------------------------------------- 1. describe


def enroll(transport: Transport, config: EncodeConfig, *, expected: int, min_participants: int,
           node_wait_s: float, server_round: int, failures: FailureLog,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
           ) -> list[Participant]:
    """Describe nodes as they connect until every expected participant is known.

    Starts as soon as the described nodes host ``expected`` participants, when the transport
    can grow no more (in process), or when a simulated federation's every node has been
    described (each reports its size, ``num-partitions``); otherwise when ``node_wait_s`` runs
    out, with those known (at least ``min_participants``).
    """
    deadline = clock() + node_wait_s
    described: dict[str, Described] = {}
    while True:
        connected, new = transport.describe(config, server_round)
        described.update(new)
        found = [d for d in described.values() if not isinstance(d, str)]
        if len(found) >= expected or not transport.may_grow:
            break
        if found and federation_complete(connected, [info.num_partitions for _, info in found]):
            log.warning("the simulated federation's %d nodes host %d of %d participants; "
                        "starting with them", connected, len(found), expected)
            break
        if clock() > deadline:
            if len(found) >= min_participants:
                log.warning("only %d of %d participants connected within %g s; starting with them",
                            len(found), expected, node_wait_s)
                break
            raise RoundFailed(f"only {len(found)} of {expected} participants connected within "
                              f"{node_wait_s:g} s; start more SuperNodes or lower min-participants")
        sleep(1.0)
    participants = name_participants(described, failures)
    check_survivors(len(participants), min_participants, "describe")
    for p in participants:
        log.info("  %s: node %d runs %s (%d-d, %d px, %s)", p.name, p.node_id, p.prototype,
                 p.output_dim, p.image_size, p.device)
    return participants


def name_participants(described: Mapping[str, Described], failures: FailureLog) -> list[Participant]:
    """Participants from the describe replies, in a stable order, named ``p0, p1, ...``.

    Slots (simulation) or partition ids give an order that does not depend on how many nodes
    host the participants; node ids otherwise. A key whose describe failed is refused.
    """
    participants = []
    for key, reply in described.items():
        if isinstance(reply, str):
            failures.refuse(key, "describe", reply)
        else:
            participants.append(Participant.from_description(*reply))
    participants.sort(key=lambda p: (p.slot < 0, p.slot, p.partition_id < 0, p.partition_id, p.node_id))
    for index, p in enumerate(participants):
        p.name = f"p{index}"
    return participants


# --------------------------------------------------------------------------- 2. shared subset


@dataclass
class SharedEmbeddings:
    """What the shared subset gave: every survivor's embeddings of S, and the student's."""

    own: dict[str, np.ndarray]
    student: np.ndarray | None = None


def shared_requests(participants: list[Participant], config: EncodeConfig, pixels: np.ndarray,
                    student: Student | None, target_dim: int,
                    refine_ids: Mapping[str, np.ndarray] | None = None) -> dict[str, tuple[int, EncodeRequest, int]]:
    """The shared-subset request of every participant: ``name -> (node id, request, reply
    size limit)``; each request names the participant that is to answer.

    ``refine_ids`` (``refinement = distill``, ``config`` asking to refine): each participant's
    shard sample to refine on, sent with S.
    """
    limit = reply_limit(len(pixels), target_dim, student=student is not None)
    return {p.name: (p.node_id, EncodeRequest(dataclasses.replace(config, slot=p.slot), pixels=pixels,
                                              student=student,
                                              refine_ids=None if refine_ids is None else refine_ids[p.name]),
                     limit)
            for p in participants}


def accept_shared(participants: list[Participant], replies: Mapping[str, Reply], pixels: np.ndarray, *,
                  target_dim: int, student: Student | None, failures: FailureLog,
                  min_participants: int, refine: bool = False) -> tuple[list[Participant], SharedEmbeddings]:
    """The participants whose shared-subset replies pass the checks, and their embeddings.

    With a student, every participant also returns the student's embeddings of S; the
    first survivor's are taken and every other one must agree with them. With ``refine``
    (distill), every reply must name the refined head its embeddings came from.
    """
    sent = pixels_digest(pixels)
    no_ids = np.full(len(pixels), -1)
    survivors, embeddings = [], SharedEmbeddings({})
    tolerance = 0.0
    for p in participants:
        try:
            reply = replies[p.name]
            if isinstance(reply, str):
                raise ReplyRefused(reply)
            if reply.pixels_sha256 != sent:
                raise ReplyRefused("encoded other shared images than were sent (pixel checksum mismatch)")
            own = check_reply_targets(reply.targets, reply.ids, no_ids, target_dim)
            if refine and not reply.refined_digest:
                raise ReplyRefused("was asked to refine its prototype (refinement=distill) but names no "
                                   "refined head: its node runs a CoOpt version without distill")
            p.refined_digest, p.refine_seconds = reply.refined_digest, reply.refine_seconds
            p.count_encoding(reply)
            if student is not None:
                theirs = check_reply_targets(reply.extra.get("student-targets"), reply.ids, no_ids,
                                             target_dim, what="student-targets")
                check_student_digest(reply, student)
                mine = embedding_tolerance(p.precision, p.device)
                if embeddings.student is None:
                    embeddings.student, tolerance = theirs, mine
                else:
                    check_student_agreement(theirs, embeddings.student, max(tolerance, mine), p)
            embeddings.own[p.name] = own
            p.shared_sha256 = reply.pixels_sha256
            survivors.append(p)
        except ReplyRefused as error:
            failures.refuse(p.name, "shared subset", str(error))
    check_survivors(len(survivors), min_participants, "the shared subset")
    return survivors, embeddings


def check_student_digest(reply: EncodeReply, student: Student) -> None:
    """The student a participant ran must be the platform's (weights digest)."""
    sent = str(student[1].get("digest", ""))
    if reply.student_digest and reply.student_digest != sent:
        raise ReplyRefused(f"it ran other student weights than were sent (digest "
                           f"{reply.student_digest} instead of {sent})")


def check_student_agreement(theirs: np.ndarray, first: np.ndarray, tolerance: float, p: Participant) -> None:
    """A participant's student embeddings of S must agree with the first participant's within
    the tolerance of the less precise arithmetic of the two (CPU float32, GPU TF32, bf16 /
    fp16 autocast)."""
    difference = relative_difference(theirs, first)
    if difference > tolerance:
        raise ReplyRefused(f"its student embeddings of S differ from the other participants' by "
                           f"{difference:.1%} (tolerance {tolerance:.1%} for {p.precision} on {p.device})")
