"""A round (or several) with participants in this process: no Flower, the same engine.

Notebooks, the benchmark and the tests drive the product's round through
:class:`~coopt_flower.engine.transport.InProcessTransport`: participant ``i`` stands for node
``i``, and replies are exchanged as the objects of :mod:`coopt_flower.protocol`, so the round
sees exactly what a Flower run gives it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from coopt_flower.config import RunSettings
from coopt_flower.data import ImageSource
from coopt_flower.engine.round import RoundResult, run_round
from coopt_flower.engine.transport import InProcessTransport, LocalParticipant, Student
from coopt_flower.merges import Merge


def run_in_process(settings: RunSettings, source: ImageSource, participants: list[LocalParticipant], *,
                   server_round: int = 1, student: Student | None = None,
                   merge: Merge | str | None = None) -> RoundResult:
    """Run one round with ``participants`` in this process and publish its dataset.

    ``merge`` overrides the settings' merge (the benchmark's ablations: ``none``, ``heads``).
    """
    if merge is not None:
        settings = dataclasses.replace(settings, merge=str(Merge(merge)))
    return run_round(settings, source, InProcessTransport(participants), server_round=server_round,
                     student=student)


def run_rounds_in_process(settings: RunSettings, source: ImageSource,
                          participants: list[LocalParticipant] | Callable[[int], list[LocalParticipant]]) -> dict:
    """All ``num-server-rounds`` rounds with ``participants`` in this process: the loop the
    ServerApp runs (:func:`~coopt_flower.engine.multiround.run_rounds`: students, refinement,
    progress file, resume), so a study runs N rounds without launching Flower. Returns the
    progress (rounds and their students).

    ``participants`` may be a callable giving each round's participants (round number in):
    participants that bring another prototype from some round on
    (:func:`prototype_participants` follows the run config's ``round-prototypes``).
    """
    from coopt_flower.engine.multiround import run_rounds

    return run_rounds(settings, source, InProcessTransport(participants))


def prototype_participants(settings: RunSettings, device: str = "cpu") -> Callable[[int], list[LocalParticipant]]:
    """Each round's :class:`~coopt_flower.participant.PrototypeParticipant` s, one per spec of
    :meth:`RunSettings.prototypes_for_round` (slot ``i`` runs entry ``i``). A participant keeps
    its object while its prototype does not change, so what it holds (a refined head) stays."""
    from coopt_flower.participant import NodeSettings, PrototypeParticipant

    made: dict[tuple[int, str], PrototypeParticipant] = {}

    def for_round(server_round: int) -> list[LocalParticipant]:
        return [made.setdefault((i, spec), PrototypeParticipant(NodeSettings(spec, device=device, partition_id=i)))
                for i, spec in enumerate(settings.prototypes_for_round(server_round))]
    return for_round
