"""The ClientApp called directly, as the SuperNode would call it, on real Fashion-MNIST."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from client_app.client_app import app
from coopt_flower.data import open_source

@pytest.fixture(autouse=True)
def task_identity():
    """The SuperNode runtime sets the process's task identity before calling a ClientApp."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 7
    yield
    TaskIdentity.task_id = TaskIdentity.run_id = TaskIdentity.node_id = None


RUN_CONFIG = {"prototypes": "efficientnet-lite0,onnx:open-nsfw"}
CONFIG = {"target-dim": 48, "projection-seed": 3, "batch-size": 16, "image-size": 32,
          "data": "fashion-mnist"}


def call(message_type, records, partition_id=0, node_config=None):
    context = Context(run_id=1, node_id=7, state=RecordDict(), run_config=dict(RUN_CONFIG),
                      node_config=node_config or {"partition-id": partition_id, "num-partitions": 2})
    msg = Message(RecordDict(records), dst_node_id=7, message_type=message_type)
    return app(msg, context)


@pytest.mark.parametrize("partition_id, spec, dim", [(0, "efficientnet-lite0", 1280),
                                                     (1, "onnx:open-nsfw", 1024)])
def test_describe_reports_the_partitions_prototype(partition_id, spec, dim):
    reply = call("query.describe", {"config": ConfigRecord({"image-size": 32})}, partition_id)
    info = reply.content["describe"]
    assert info["prototype"] == spec and info["output-dim"] == dim
    assert info["image-size"] == 32 and info["partition-id"] == partition_id


def test_node_config_prototype_overrides_run_config():
    reply = call("query.describe", {"config": ConfigRecord({"image-size": 32})},
                 node_config={"prototype": "onnx:open-nsfw"})
    assert reply.content["describe"]["prototype"] == "onnx:open-nsfw"


def test_optimize_page_returns_targets_for_the_asked_ids():
    ids = np.array([5, 17, 2, 40000, 9], dtype=np.int64)
    reply = call("query.encode", {"config": ConfigRecord(CONFIG),
                                    "inputs": ArrayRecord({"ids": Array(ids)})})
    out = reply.content["outputs"]
    targets = out["targets"].numpy()
    assert targets.shape == (5, 48) and targets.dtype == np.float32
    assert np.array_equal(out["ids"].numpy(), ids)
    assert np.isfinite(targets).all() and reply.content["metrics"]["num-images"] == 5
    # Same images sent as pixels give the same targets: ids are read from the node's own copy.
    pixels = open_source("fashion-mnist").images(ids)
    again = call("query.encode", {"config": ConfigRecord(CONFIG),
                                    "inputs": ArrayRecord({"pixels": Array(pixels)})})
    assert np.allclose(again.content["outputs"]["targets"].numpy(), targets, atol=1e-4)
    assert (again.content["outputs"]["ids"].numpy() == -1).all()
    assert len(again.content["info"]["pixels-sha256"]) == 64


def test_bad_data_spec_fails_with_a_clear_error():
    # The SuperNode runtime turns this exception into an error reply for the platform.
    bad = dict(CONFIG, data="no-such-source")
    with pytest.raises(ValueError, match="unknown data source 'no-such-source'"):
        call("query.encode", {"config": ConfigRecord(bad),
                                "inputs": ArrayRecord({"ids": Array(np.arange(3))})})


def test_student_rides_with_the_shared_subset_and_encodes_later_pages(train_tiny_student):
    import json

    from coopt_flower.round_student import student_payload

    trained, _ = train_tiny_student(image_size=28, target_dim=8)
    weights, config = student_payload(trained.checkpoint_path)
    context = Context(run_id=1, node_id=7, state=RecordDict(), run_config=dict(RUN_CONFIG),
                      node_config={"partition-id": 0, "num-partitions": 2})
    source = open_source("fashion-mnist")
    shared = Message(RecordDict({
        "config": ConfigRecord(CONFIG),
        "inputs": ArrayRecord({"pixels": Array(source.images(np.arange(6)))}),
        "student": ArrayRecord({k: Array(v) for k, v in weights.items()}),
        "student-config": ConfigRecord({"config-json": json.dumps(config)}),
    }), dst_node_id=7, message_type="query.encode")
    out = app(shared, context).content["outputs"]
    assert out["targets"].numpy().shape == out["student-targets"].numpy().shape == (6, 48)
    assert not np.allclose(out["targets"].numpy(), out["student-targets"].numpy())

    # A later page asks for the student: the node uses the one kept in its state.
    ids = np.array([3, 4, 5])
    page = Message(RecordDict({"config": ConfigRecord(dict(CONFIG, encoder="student")),
                               "inputs": ArrayRecord({"ids": Array(ids)})}),
                   dst_node_id=7, message_type="query.encode")
    reply = app(page, context)
    assert reply.content["info"]["encoder"] == f"student:{config['digest']}"
    assert np.allclose(reply.content["outputs"]["targets"].numpy(),
                       out["student-targets"].numpy()[3:], atol=1e-4)

    # Without a student in the state, asking for it is an error, not a silent fallback.
    fresh = Context(run_id=1, node_id=7, state=RecordDict(), run_config=dict(RUN_CONFIG),
                    node_config={"partition-id": 0, "num-partitions": 2})
    with pytest.raises(RuntimeError, match="no student was received"):
        app(page, fresh)


@pytest.mark.parametrize("layers", ["head", "last-stage"])
def test_distill_refines_on_the_shared_subset_and_later_pages_use_the_kept_head(train_tiny_student, layers):
    """refinement = distill through the ClientApp: the node refines towards the student, keeps the
    head in its context state, and a page answered by a process that never refined (its cache
    empty) rebuilds the head from that state: the same targets."""
    import json

    from coopt_flower import participant
    from coopt_flower.round_student import student_payload

    trained, _ = train_tiny_student(image_size=28, target_dim=8)
    weights, config = student_payload(trained.checkpoint_path)
    context = Context(run_id=1, node_id=7, state=RecordDict(), run_config=dict(RUN_CONFIG),
                      node_config={"partition-id": 0, "num-partitions": 2})
    source = open_source("fashion-mnist")
    refine = dict(CONFIG, **{"refine-epochs": 2, "refine-hidden": 16, "refine-lr": 0.001,
                             "refine-layers": layers, "refine-seed": 5, "slot": 0})
    shared = Message(RecordDict({
        "config": ConfigRecord(refine),
        "inputs": ArrayRecord({"pixels": Array(source.images(np.arange(16))),
                               "refine-ids": Array(np.arange(100, 140, dtype=np.int64))}),
        "student": ArrayRecord({k: Array(v) for k, v in weights.items()}),
        "student-config": ConfigRecord({"config-json": json.dumps(config)}),
    }), dst_node_id=7, message_type="query.encode", group_id="round-2")
    reply = app(shared, context)
    digest = reply.content["info"]["refined-digest"]
    assert len(digest) == 16 and reply.content["metrics"]["refine-seconds"] > 0
    assert reply.content["info"]["encoder"] == f"efficientnet-lite0+distill:{digest}"
    assert "refined-0" in context.state.array_records  # the weights stay on the node

    page = Message(RecordDict({"config": ConfigRecord(dict(CONFIG, encoder="refined", refined=digest, slot=0)),
                               "inputs": ArrayRecord({"ids": Array(np.arange(6))})}),
                   dst_node_id=7, message_type="query.encode", group_id="round-2")
    first = app(page, context).content["outputs"]["targets"].numpy()
    participant._REFINED.clear()  # another process of the node: nothing refined in memory
    again = app(page, context).content["outputs"]["targets"].numpy()
    assert np.array_equal(first, again)
    assert np.allclose(first, reply.content["outputs"]["targets"].numpy()[:6], atol=1e-5)


def test_round_prototypes_change_what_a_simulated_node_runs_from_that_round():
    context_config = dict(RUN_CONFIG, **{"num-server-rounds": 3, "round-prototypes": "3=efficientnet-lite1,onnx:open-nsfw"})
    for group, spec in (("round-2", "efficientnet-lite0"), ("round-3", "efficientnet-lite1")):
        context = Context(run_id=1, node_id=7, state=RecordDict(), run_config=context_config,
                          node_config={"partition-id": 0, "num-partitions": 2})
        msg = Message(RecordDict({"config": ConfigRecord({"image-size": 32})}), dst_node_id=7,
                      message_type="query.describe", group_id=group)
        assert app(msg, context).content["describe"]["prototype"] == spec
