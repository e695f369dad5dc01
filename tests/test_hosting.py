"""Several participants per node: every prototype takes part whatever the federation size."""

import uuid

import numpy as np
import pytest
import torch
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from client_app.client_app import app as client_app
from coopt_flower import protocol
from coopt_flower.config import RunSettings
from coopt_flower.data import open_source
from coopt_flower.hosting import federation_complete, hosted_slots, spec_for_slot, total_slots
from coopt_flower.protocol import Description
from server_app.records import to_record_dict
from server_app.strategy import CoOptStrategy
from simulations.check_identical import TINY_RUN_CONFIG, compare


@pytest.mark.parametrize("nodes, specs, expected", [
    (2, 4, [[0, 2], [1, 3]]),          # Flower's default federation, the four default prototypes
    (4, 4, [[0], [1], [2], [3]]),      # one per node, as before
    (3, 4, [[0, 3], [1], [2]]),
    (1, 2, [[0, 1]]),
    (5, 4, [[0], [1], [2], [3], [4]]),  # more nodes than prototypes: slot 4 runs prototype 0 again
])
def test_every_slot_is_hosted_exactly_once(nodes, specs, expected):
    hosted = [hosted_slots(i, nodes, specs) for i in range(nodes)]
    assert hosted == expected
    assert sorted(s for h in hosted for s in h) == list(range(total_slots(specs, 0, nodes)))


def test_slots_wrap_around_the_prototypes_and_deployment_hosts_one():
    assert [spec_for_slot("abcd", s) for s in (0, 3, 4, 5)] == ["a", "d", "a", "b"]
    assert hosted_slots(6, 0, 4) == [2]  # partition id without a federation size: one slot
    assert hosted_slots(0, 2, 4, num_participants=6) == [0, 2, 4]
    with pytest.raises(ValueError, match="no prototype"):
        spec_for_slot([], 0)


def test_federation_is_complete_only_when_every_node_says_so():
    assert federation_complete(2, [2, 2, 2, 2])
    assert not federation_complete(1, [2, 2])        # the second node has not connected yet
    assert not federation_complete(2, [2, 0])        # a deployed node: nobody knows the size
    assert not federation_complete(4, [])


def test_describe_reply_carries_every_hosted_participant():
    infos = [Description(prototype="a", slot=0), Description(prototype="b", slot=2)]
    content = protocol.describe_content(infos)
    assert set(content) == {"describe", "describe-1"}
    records = to_record_dict(content)
    assert protocol.read_descriptions(records) == infos
    # An old node's reply (one record) reads as one participant.
    assert protocol.read_descriptions({"describe": infos[0].to_config()}) == infos[:1]


# --------------------------------------------------------------------------- the ClientApp

@pytest.fixture(autouse=True)
def task_identity():
    """The SuperNode runtime sets the process's task identity before calling a ClientApp."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    yield
    TaskIdentity.task_id = TaskIdentity.run_id = TaskIdentity.node_id = None


def node_context(node_id, partition_id, num_partitions, run_config):
    return Context(run_id=1, node_id=node_id, state=RecordDict(), run_config=dict(run_config),
                   node_config={"partition-id": partition_id, "num-partitions": num_partitions})


def call(context, message_type, records):
    from flwr.supercore.task_identity import TaskIdentity

    msg = Message(RecordDict(records), dst_node_id=context.node_id, message_type=message_type)
    TaskIdentity.node_id = context.node_id
    try:
        return client_app(msg, context)
    finally:
        TaskIdentity.node_id = SUPERLINK_NODE_ID


RUN_CONFIG = {"prototypes": "efficientnet-lite0,onnx:open-nsfw"}
CONFIG = {"target-dim": 16, "projection-seed": 3, "batch-size": 16, "image-size": 32, "data": "fashion-mnist"}


def test_a_node_hosting_two_participants_describes_both_and_runs_the_one_named():
    context = node_context(7, 0, 1, RUN_CONFIG)  # one node for two prototypes
    reply = call(context, "query.describe", {"config": ConfigRecord({"image-size": 32})})
    infos = protocol.read_descriptions(reply.content)
    assert [(i.prototype, i.slot, i.output_dim, i.num_partitions) for i in infos] == \
        [("efficientnet-lite0", 0, 1280, 1), ("onnx:open-nsfw", 1, 1024, 1)]

    ids = Array(np.array([1, 2, 3], np.int64))
    for slot, spec in ((1, "onnx:open-nsfw"), (0, "efficientnet-lite0")):
        page = call(context, "query.encode", {"config": ConfigRecord(dict(CONFIG, slot=slot)),
                                                "inputs": ArrayRecord({"ids": ids})})
        assert page.content["info"]["prototype"] == spec
    # Without a slot (a platform that does not name participants) the first one answers.
    page = call(context, "query.encode", {"config": ConfigRecord(CONFIG), "inputs": ArrayRecord({"ids": ids})})
    assert page.content["info"]["prototype"] == "efficientnet-lite0"
    with pytest.raises(Exception, match=r"slot 5, but this node hosts slots \[0, 1\]"):
        call(context, "query.encode", {"config": ConfigRecord(dict(CONFIG, slot=5)),
                                         "inputs": ArrayRecord({"ids": ids})})


def test_node_config_prototype_still_means_one_participant():
    context = node_context(7, 0, 1, RUN_CONFIG)
    context.node_config["prototype"] = "onnx:open-nsfw"
    infos = protocol.read_descriptions(call(context, "query.describe", {"config": ConfigRecord({"image-size": 32})}).content)
    assert [(i.prototype, i.slot) for i in infos] == [("onnx:open-nsfw", -1)]


# --------------------------------------------------------------------------- the strategy

class InProcessGrid:
    """A Grid whose nodes are the real ClientApp called in this process, one message at a time."""

    def __init__(self, contexts):
        self.contexts = {c.node_id: c for c in contexts}
        self.node_id_calls = 0

    def get_node_ids(self):
        self.node_id_calls += 1
        return list(self.contexts)

    def _answer(self, msg):
        from flwr.supercore.task_identity import TaskIdentity

        msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())  # as a Grid does on push
        context = self.contexts[msg.metadata.dst_node_id]
        TaskIdentity.node_id = context.node_id
        try:
            reply = client_app(msg, context)
        finally:
            TaskIdentity.node_id = SUPERLINK_NODE_ID  # the platform's messages come from it
        reply.metadata.__dict__["_message_id"] = str(uuid.uuid4())
        return reply

    def send_and_receive(self, messages, *, timeout=None):
        return [self._answer(msg) for msg in messages][::-1]  # in any order: matched by message id

    def push_messages(self, messages):
        self.ready = getattr(self, "ready", {})
        ids = []
        for msg in messages:
            reply = self._answer(msg)
            ids.append(msg.metadata.message_id)
            self.ready[ids[-1]] = reply
        return ids

    def pull_messages(self, message_ids):
        return [self.ready.pop(m) for m in list(message_ids) if m in self.ready][::-1]


def test_one_node_hosting_both_prototypes_writes_the_recorded_bytes_without_waiting(tmp_path):
    """The tiny run's two prototypes on ONE node give the bytes recorded for two nodes."""
    settings = RunSettings.from_run_config(dict(TINY_RUN_CONFIG, **{"output-dir": str(tmp_path / "out"),
                                                                   "node-wait-s": 600.0}))
    run_config = {"prototypes": TINY_RUN_CONFIG["prototypes"]}
    grid = InProcessGrid([node_context(42, 0, 1, run_config)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a simulated ClientApp with num-cpus 1
    try:
        result = CoOptStrategy(settings, open_source("fashion-mnist")).start(grid)
    finally:
        torch.set_num_threads(threads)
    assert grid.node_id_calls == 1  # all participants known at once: no waiting
    participants = result.manifest.participants
    assert [(p.name, p.node_id, p.slot, p.prototype) for p in participants] == \
        [("p0", 42, 0, "efficientnet-lite0"), ("p1", 42, 1, "onnx:open-nsfw")]
    assert [p.num_samples for p in participants] == [100, 100]
    assert compare(result.dataset_path) == []
