"""The protocol's messages as Flower records (server_app.records), both ways."""

from types import SimpleNamespace

import numpy as np

from coopt_flower.protocol import EncodeConfig, EncodeReply, EncodeRequest, reply_limit
from server_app import records
from server_app.records import from_record_dict, read_encode_reply, to_record_dict


def test_request_and_reply_survive_flower_records():
    pixels = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    student = ({"w": np.ones((2, 2), np.float32)}, {"digest": "abc", "arch": "small-cnn"})
    request = EncodeRequest(EncodeConfig(target_dim=8), pixels=pixels, student=student)
    records = to_record_dict(request.content())
    back = EncodeRequest.from_content(from_record_dict(records))
    assert np.array_equal(back.pixels, pixels) and back.ids is None and back.config == request.config
    assert np.array_equal(back.student[0]["w"], student[0]["w"]) and back.student[1] == student[1]

    page = EncodeRequest(EncodeConfig(target_dim=8), ids=np.array([3, 1], np.int32))
    back = EncodeRequest.from_content(from_record_dict(to_record_dict(page.content())))
    assert back.ids.dtype == np.int64 and back.ids.tolist() == [3, 1] and back.pixels is None

    reply = EncodeReply(targets=np.ones((2, 8), np.float32), ids=np.array([3, 1]), encode_seconds=0.5,
                        num_images=2, prototype="p", encoder="p", pixels_sha256="ab",
                        extra={"student-targets": np.zeros((2, 8), np.float32)})
    back = EncodeReply.from_content(from_record_dict(to_record_dict(reply.content())))
    assert np.array_equal(back.targets, reply.targets) and back.num_images == 2
    assert back.pixels_sha256 == "ab" and set(back.extra) == {"student-targets"}


def test_a_reply_larger_than_its_page_is_refused_before_it_is_decoded(monkeypatch):
    rows, dim = 10, 16
    huge = EncodeReply(targets=np.zeros((rows * 1000, dim), np.float32), ids=np.arange(rows * 1000))
    fine = EncodeReply(targets=np.zeros((rows, dim), np.float32), ids=np.arange(rows))
    decoded = []
    real = records.from_record_dict
    monkeypatch.setattr(records, "from_record_dict", lambda r: decoded.append(r) or real(r))
    limit = reply_limit(rows, dim)
    refused = read_encode_reply(SimpleNamespace(content=to_record_dict(huge.content())), limit)
    accepted = read_encode_reply(SimpleNamespace(content=to_record_dict(fine.content())), limit)
    assert isinstance(refused, str) and "larger than its page allows" in refused
    assert isinstance(accepted, EncodeReply) and len(decoded) == 1  # only the fine one was decoded
    assert read_encode_reply("node offline", limit) == "node offline"  # a reason passes through
