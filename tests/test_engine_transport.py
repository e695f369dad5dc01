"""The engine's transports (coopt_flower.engine.transport): in process, and the barrier exchange."""

import numpy as np

from coopt_flower.engine.transport import InProcessTransport, exchange
from coopt_flower.protocol import Description, EncodeConfig, EncodeReply, EncodeRequest


class Recorder:
    """Remembers which student each request was answered with."""

    def __init__(self, fail=False):
        self.fail, self.students = fail, []

    def describe(self, config):
        return Description(prototype="r")

    def encode(self, request, student=None):
        if self.fail:
            raise RuntimeError("out of memory")
        self.students.append(request.student or student)
        return EncodeReply(targets=np.zeros((1, 2), np.float32), ids=np.array([-1]))


def test_a_node_keeps_the_student_of_its_shared_request_for_its_pages():
    a, b = Recorder(), Recorder()
    transport = InProcessTransport([a, b])
    student = ({"w": np.ones(2)}, {"digest": "d"})
    config = EncodeConfig(target_dim=2)
    transport.send(0, EncodeRequest(config, pixels=np.zeros((1, 2, 2, 3), np.uint8), student=student), 1 << 20, 1)
    transport.send(0, EncodeRequest(config, ids=np.array([3])), 1 << 20, 1)
    transport.send(1, EncodeRequest(config, ids=np.array([4])), 1 << 20, 1)  # b was sent no student
    assert a.students == [student, student] and b.students == [None]


def test_describe_answers_once_and_a_failing_participant_answers_with_its_reason():
    transport = InProcessTransport([Recorder(), Recorder(fail=True)])
    connected, described = transport.describe(EncodeConfig(), 1)
    assert connected == 2 and set(described) == {"node-0", "node-1"}
    assert transport.describe(EncodeConfig(), 1) == (2, {}) and not transport.may_grow
    assert set(transport.describe(EncodeConfig(), 2)[1]) == {"node-0", "node-1"}  # a new round asks again
    handle = transport.send(1, EncodeRequest(EncodeConfig(), ids=np.array([0])), 1 << 20, 1)
    assert transport.poll([handle]) == {handle: "failed: out of memory"}


class Silent:
    """A transport on which node 1 never answers; each poll is one second of a simulated clock."""

    def __init__(self):
        self.now, self.sent = 0.0, {}

    def send(self, node, request, limit, server_round):
        self.sent[len(self.sent)] = node
        return len(self.sent) - 1

    def poll(self, handles):
        self.now += 1.0
        return {h: EncodeReply(targets=np.zeros((0, 2)), ids=np.array([])) for h in handles if self.sent[h] == 0}

    def no_reply(self, node, waited_s):
        return f"node {node} silent for {waited_s:.0f} s"


def test_exchange_waits_for_every_reply_then_gives_the_silent_ones_a_reason():
    transport = Silent()
    request = EncodeRequest(EncodeConfig(), ids=np.array([0]))
    out = exchange(transport, {"p0": (0, request, 1), "p1": (1, request, 1)}, server_round=1, timeout_s=5.0,
                   clock=lambda: transport.now)
    assert list(out) == ["p0", "p1"] and isinstance(out["p0"], EncodeReply)
    assert out["p1"] == "node 1 silent for 6 s"


def test_a_silent_participant_is_reported_every_30_s_until_it_is_failed(caplog):
    transport = Silent()
    request = EncodeRequest(EncodeConfig(), ids=np.array([0]))
    with caplog.at_level("INFO", logger="coopt_flower.engine.transport"):
        out = exchange(transport, {"p0": (0, request, 1), "p1": (1, request, 1)}, server_round=1,
                       timeout_s=100.0, clock=lambda: transport.now)
    assert out["p1"] == "node 1 silent for 101 s"
    lines = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["  waiting for p1"] * 3  # at 30, 60 and 90 s
    assert "no reply for 30 s (it is failed after reply-timeout-s=100 s" in lines[0]
