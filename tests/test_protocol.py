"""The message schema: what each side puts on the wire, and the platform's checks of a reply."""

import numpy as np
import pytest

from coopt_flower.protocol import (Description, EncodeConfig, EncodeReply, EncodeRequest, ReplyRefused,
                                   check_pixels, check_reply_targets)


def test_encode_config_keys_are_dashed_and_local_keys_only_for_local_pages():
    config = EncodeConfig(target_dim=64, projection_seed=3, batch_size=16, image_size=32, data="fashion-mnist")
    assert config.to_config() == {"target-dim": 64, "projection-seed": 3, "batch-size": 16,
                                  "image-size": 32, "data": "fashion-mnist", "encoder": "own"}
    config.scope, config.upload_images = "local", True
    wire = config.to_config()
    assert wire["scope"] == "local" and wire["upload-images"] is True
    assert EncodeConfig.from_config(wire) == config


def test_description_reads_known_keys_with_their_types_and_ignores_others():
    info = Description.from_config({"prototype": "onnx:open-nsfw", "output-dim": 1024, "partition-id": 1,
                                    "local-samples": 0, "something-new": "x"})
    assert info.prototype == "onnx:open-nsfw" and info.output_dim == 1024 and info.partition_id == 1
    assert info.device == "?"  # missing keys keep their defaults
    with pytest.raises(ValueError):
        Description.from_config({"output-dim": "many"})


def test_a_reply_without_outputs_is_refused_with_the_reason():
    with pytest.raises(ReplyRefused, match="reply lacks targets, ids or metrics"):
        EncodeReply.from_content({"metrics": {"encode-seconds": 1.0, "num-images": 2}})


@pytest.mark.parametrize("targets, returned, reason", [
    (np.ones((3, 4)), np.arange(3), r"shape \(3, 4\), expected \(3, 5\)"),
    (np.ones((3, 5), np.int32), np.arange(3), "dtype int32"),
    (np.full((3, 5), np.nan), np.arange(3), "15 NaN or Inf"),
    (np.ones((3, 5)), np.array([0, 1, 7]), "1 outside the page"),
    (np.ones((3, 5)), np.array([0, 0, 1]), "1 duplicated"),
    (np.ones((3, 5)), np.array([1, 0, 2]), "out of order"),
    (None, np.arange(3), "reply lacks targets"),
])
def test_check_reply_targets_refuses_what_must_not_be_merged(targets, returned, reason):
    with pytest.raises(ReplyRefused, match=reason):
        check_reply_targets(targets, returned, np.arange(3), 5)


def test_check_reply_targets_passes_a_good_reply_as_float32():
    out = check_reply_targets(np.ones((3, 5), np.float64), np.arange(3), np.arange(3), 5)
    assert out.dtype == np.float32 and out.shape == (3, 5)


def test_check_pixels():
    good = np.zeros((2, 4, 4, 3), np.uint8)
    assert check_pixels(good, 2, None) is not None
    with pytest.raises(ReplyRefused, match="expected uint8"):
        check_pixels(good.astype(np.float32), 2, None)
    with pytest.raises(ReplyRefused, match="earlier pages had"):
        check_pixels(good, 2, (8, 8, 3))
    with pytest.raises(ReplyRefused, match="no pixels"):
        check_pixels(None, 2, None)
