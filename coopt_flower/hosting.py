"""Which participants a node hosts, and when the platform has heard from all of them.

A *participant* is one prototype at work: participant slot ``s`` runs entry ``s % K`` of the
run config's ``prototypes`` list (K entries). A simulated federation of N nodes hosts
``T = max(num-participants or K, N)`` slots; node partition ``i`` hosts slots ``i, i + N,
i + 2N, ...`` below T. So N >= K gives one participant per node (as Flower's examples do), and
Flower's default federation of 2 nodes hosts all four default prototypes, two per node,
instead of leaving two of them out.

A deployed SuperNode that names its own prototype (node config ``prototype=...``) hosts one
participant with no slot (:data:`OWN_PROTOTYPE`).
"""

from __future__ import annotations

from typing import Sequence

OWN_PROTOTYPE = -1  # slot of a node that runs the prototype its node config names


def total_slots(num_specs: int, num_participants: int = 0, num_partitions: int = 0) -> int:
    """How many participants a simulated federation hosts (see the module docstring)."""
    return max(num_participants or num_specs, num_partitions, 1)


def hosted_slots(partition_id: int, num_partitions: int, num_specs: int,
                 num_participants: int = 0) -> list[int]:
    """Slots hosted by node ``partition_id`` of ``num_partitions`` (unknown: 0).

    Without a federation size (a deployed node that sets only ``partition-id``), the node
    hosts the one slot ``partition_id`` (wrapping around the prototype list).

    Examples
    --------
    >>> hosted_slots(0, 2, 4), hosted_slots(1, 2, 4)
    ([0, 2], [1, 3])
    >>> hosted_slots(3, 4, 4), hosted_slots(4, 5, 4)
    ([3], [4])
    """
    total = total_slots(num_specs, num_participants, num_partitions)
    if num_partitions <= 0:
        return [partition_id % total]
    return list(range(partition_id, total, num_partitions))


def spec_for_slot(specs: Sequence[str], slot: int) -> str:
    """The prototype spec participant ``slot`` runs (slots past the list wrap around)."""
    if not specs:
        raise ValueError("no prototype: set node config 'prototype' or run config 'prototypes'")
    return specs[slot % len(specs)]


def federation_complete(num_nodes: int, num_partitions: Sequence[int]) -> bool:
    """Whether every node of a simulated federation has been heard from.

    ``num_partitions`` holds what each described node reports as its federation size (0 for a
    deployed node, which cannot know). Only when every node reports the same size, and that
    many nodes are connected, is nobody else coming.
    """
    sizes = set(num_partitions)
    return len(sizes) == 1 and (size := sizes.pop()) > 0 and num_nodes >= size


def parse_round_prototypes(value: str, num_specs: int, num_rounds: int) -> dict[int, list[str]]:
    """``"R=spec,spec,...;R2=..."`` (run config ``round-prototypes``) as ``{round: specs}``.

    From round R on, participant slot ``s`` runs entry ``s`` of that round's list instead of
    the ``prototypes`` list: a simulated participant bringing a new prototype (a deployed node
    does the same by being restarted with another node config ``prototype``). Every list has
    as many entries as ``prototypes`` (a change replaces a participant's prototype; one that
    leaves is a node that stops). Raises ``ValueError`` naming what to fix.

    Examples
    --------
    >>> parse_round_prototypes("2=a,b; 3=a,c", 2, 3)
    {2: ['a', 'b'], 3: ['a', 'c']}
    """
    changes: dict[int, list[str]] = {}
    for item in (part.strip() for part in str(value).split(";")):
        if not item:
            continue
        head, sep, body = item.partition("=")
        try:
            server_round = int(head)
        except ValueError:
            server_round = 0
        if not sep or server_round < 2 or server_round > num_rounds:
            raise ValueError(f"round-prototypes entry {item!r}: expected R=spec,spec,... with R from 2 to "
                             f"num-server-rounds ({num_rounds})")
        specs = [spec.strip() for spec in body.split(",") if spec.strip()]
        if len(specs) != num_specs:
            raise ValueError(f"round-prototypes entry {item!r} names {len(specs)} prototypes, prototypes has "
                             f"{num_specs}: give one per participant, in the same order")
        if server_round in changes:
            raise ValueError(f"round-prototypes names round {server_round} twice")
        changes[server_round] = specs
    return dict(sorted(changes.items()))


def specs_for_round(specs: Sequence[str], changes: dict[int, list[str]], server_round: int) -> list[str]:
    """The prototype list in force in ``server_round`` (the latest change at or before it)."""
    current = list(specs)
    for changed_at, new in changes.items():
        if changed_at <= server_round:
            current = list(new)
    return current
