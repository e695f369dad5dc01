"""The round engine: one CoOpt round, and several, over any transport (Flower or in process).

See :mod:`coopt_flower.engine.round` for the step sequence and its phases.
"""

from coopt_flower.engine.failures import Failure, RoundFailed
from coopt_flower.engine.in_process import prototype_participants, run_in_process, run_rounds_in_process
from coopt_flower.engine.multiround import run_rounds
from coopt_flower.engine.round import RoundResult, run_round
from coopt_flower.engine.transport import InProcessTransport, Transport

__all__ = ["Failure", "InProcessTransport", "prototype_participants", "RoundFailed", "RoundResult", "Transport", "run_in_process",
           "run_round", "run_rounds", "run_rounds_in_process"]
