"""What went wrong in a round: refused replies, lost participants, and a round that fails.

A participant that fails, does not reply, or sends a reply that does not pass the checks of
:mod:`coopt_flower.protocol` is refused: one line in the report (:class:`Failure`), the
full reason (a traceback, say) in ``failures.log`` beside it, and it takes no further part in
the round. Too few participants left raise :class:`RoundFailed`, and nothing is published.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from coopt_flower.errors import one_line

log = logging.getLogger(__name__)

FAILURES_LOG = "failures.log"  # full reasons of refused replies, published beside the report


class RoundFailed(RuntimeError):
    """Too few participants are left to finish the round."""


@dataclass
class Failure:
    """One refused reply or lost participant, as the report lists it."""

    participant: str
    step: str
    reason: str
    samples_affected: int = 0
    action: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FailureLog:
    """The round's refusals, in the order they happened."""

    failures: list[Failure] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # full multi-line reasons

    def refuse(self, name: str, step: str, reason: str) -> Failure:
        """Record a refused reply: one line in the report, the full text in ``failures.log``."""
        short = one_line(reason, table=True)
        log.warning("  %s refused at %s: %s", name, step, short)
        if short != str(reason).strip():
            self.details.append(f"== {name} at {step}\n{reason}\n")
        self.failures.append(Failure(name, step, short))
        return self.failures[-1]

    def add_affected(self, name: str, samples: int) -> None:
        """Count more of ``name``'s samples against its latest failure (pages it still had
        in flight when it failed)."""
        for failure in reversed(self.failures):
            if failure.participant == name:
                failure.samples_affected += samples
                return

    def failed(self) -> set[str]:
        return {f.participant for f in self.failures}


def check_survivors(count: int, min_participants: int, step: str) -> None:
    """Raise :class:`RoundFailed` when fewer than ``min_participants`` are left after ``step``."""
    if count < min_participants:
        raise RoundFailed(f"after {step} only {count} participant(s) are left, "
                          f"fewer than min-participants={min_participants}")
