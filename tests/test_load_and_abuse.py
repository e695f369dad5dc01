"""Load and abuse: many participants, oversized replies, names that try to leave the dataset."""

import numpy as np
import pytest

from coopt_flower.config import RunSettings
from coopt_flower.data import open_source
from coopt_flower.dataset_format import load_optimized_dataset, safe_file_name
from coopt_flower.dataset_writer import DatasetWriter
from coopt_flower.protocol import EncodeReply, ReplyRefused, check_bad_samples, reply_limit
from coopt_flower.engine import run_in_process
from server_app.records import from_record_dict, to_record_dict
from tests.test_engine_round import LinearParticipant


def test_a_round_with_32_participants_completes(tmp_path):
    """In process (a 32-node `flwr run` is too heavy for a 2-core machine): 32 participants,
    640 tiny samples, pages of 5."""
    fashion = open_source("fashion-mnist")
    s = RunSettings.from_run_config({
        "prototypes": ",".join(["efficientnet-lite0"] * 32), "num-samples": 640, "shared-size": 32,
        "target-dim": 16, "page-size": 5, "seed": 2, "output-dir": str(tmp_path / "out")})
    result = run_in_process(s, fashion, [LinearParticipant(fashion, i) for i in range(32)])
    ds = load_optimized_dataset(result.dataset_path)
    assert len(ds) == 640 and not result.failures and result.manifest.missing_samples == 0
    assert np.bincount(np.asarray(ds.owners), minlength=32).tolist() == [20] * 32


def test_names_from_participants_cannot_leave_the_dataset(tmp_path):
    for name in ("../evil.npy", "/etc/evil.npy", "..", ".hidden.npy", "a/b.npy", "a\\b.npy", "x\x00.npy", ""):
        assert not safe_file_name(name), name
    assert safe_file_name("local_images_p0.npy")
    with DatasetWriter(tmp_path / "round-001", np.arange(4), 2) as writer:
        for name in ("../evil.npy", "sub/evil.npy"):
            with pytest.raises(ValueError, match="array name"):
                writer.create_array(name, (4, 2), np.uint8)
        writer.abort()
    assert not (tmp_path / "evil.npy").exists()


def test_bad_samples_travel_through_flower_records_and_are_checked():
    reply = EncodeReply(targets=np.zeros((2, 4), np.float32), ids=np.array([10, 12]),
                        bad_samples=[{"id": 11, "name": "x/y.jpg", "reason": "OSError: truncated\nmore"}])
    back = EncodeReply.from_content(from_record_dict(to_record_dict(reply.content())))
    good, bad, entries = check_bad_samples(back.bad_samples, np.array([10, 11, 12]))
    assert good.tolist() == [10, 12] and bad.tolist() == [11] and entries[0]["reason"] == "OSError: truncated"
    plain = EncodeReply(targets=np.zeros((1, 4), np.float32), ids=np.array([1]))
    assert "bad-samples" not in plain.content()["info"]  # the usual reply is unchanged on the wire
    with pytest.raises(ReplyRefused, match="outside the page"):
        check_bad_samples([{"id": 99}], np.array([10, 11]))
