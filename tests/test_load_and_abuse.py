"""Load and abuse: many participants, oversized replies, names that try to leave the dataset."""

from types import SimpleNamespace

import numpy as np
import pytest

from coopt_flower import protocol
from coopt_flower.config import RunSettings
from coopt_flower.data import open_source
from coopt_flower.dataset_format import DatasetWriter, load_optimized_dataset, safe_file_name
from coopt_flower.protocol import EncodeReply, ReplyRefused, check_bad_samples, reply_limit
from coopt_flower.round import CoOptRound, run_in_process
from server_app.strategy import CoOptStrategy
from tests.test_round import LinearParticipant


def test_a_round_with_32_participants_completes(tmp_path):
    """In process (a 32-node `flwr run` is too heavy for a 2-core machine): 32 participants,
    640 tiny samples, pages of 5."""
    fashion = open_source("fashion-mnist")
    s = RunSettings.from_run_config({
        "prototypes": ",".join(["efficientnet-lite0"] * 32), "num-samples": 640, "shared-size": 32,
        "target-dim": 16, "page-size": 5, "seed": 2, "output-dir": str(tmp_path / "out")})
    result = run_in_process(CoOptRound(s, fashion), [LinearParticipant(fashion, i) for i in range(32)])
    ds = load_optimized_dataset(result.dataset_path)
    assert len(ds) == 640 and not result.failures and result.summary["missing_samples"] == 0
    assert np.bincount(np.asarray(ds.owners), minlength=32).tolist() == [20] * 32


def test_a_reply_larger_than_its_page_is_refused_before_it_is_decoded(monkeypatch):
    rows, dim = 10, 16
    huge = EncodeReply(targets=np.zeros((rows * 1000, dim), np.float32), ids=np.arange(rows * 1000))
    fine = EncodeReply(targets=np.zeros((rows, dim), np.float32), ids=np.arange(rows))
    replies = {"p0": SimpleNamespace(content=protocol.to_record_dict(huge.content())),
               "p1": SimpleNamespace(content=protocol.to_record_dict(fine.content()))}
    decoded = []
    real = protocol.from_record_dict
    monkeypatch.setattr(protocol, "from_record_dict", lambda r: decoded.append(r) or real(r))
    limit = reply_limit(rows, dim)
    out = CoOptStrategy._encode_replies(replies, {"p0": limit, "p1": limit})
    assert isinstance(out["p0"], str) and "larger than its page allows" in out["p0"]
    assert isinstance(out["p1"], EncodeReply) and len(decoded) == 1  # only p1 was decoded


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
    back = EncodeReply.from_content(protocol.from_record_dict(protocol.to_record_dict(reply.content())))
    good, bad, entries = check_bad_samples(back.bad_samples, np.array([10, 11, 12]))
    assert good.tolist() == [10, 12] and bad.tolist() == [11] and entries[0]["reason"] == "OSError: truncated"
    plain = EncodeReply(targets=np.zeros((1, 4), np.float32), ids=np.array([1]))
    assert "bad-samples" not in plain.content()["info"]  # the usual reply is unchanged on the wire
    with pytest.raises(ReplyRefused, match="outside the page"):
        check_bad_samples([{"id": 99}], np.array([10, 11]))
