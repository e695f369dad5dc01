"""A node's consent to upload its local images (node config ``share-local-images``).

The platform asks for node-local images with ``upload-local-images``; a node whose node config
says ``share-local-images=false`` keeps them: the platform publishes only their targets, and
the node never sends pixels, whatever a request asks.
"""

import numpy as np
import pytest

from client_app.client_app import hosted_participants, node_flag
from coopt_flower.data import FolderSource
from coopt_flower.dataset_format import load_optimized_dataset
from coopt_flower.engine import run_in_process
from coopt_flower.participant import NodeSettings, PrototypeParticipant
from coopt_flower.protocol import EncodeConfig, EncodeRequest
from tests.test_bad_samples import SIZE, folder_settings, linear_prototypes, make_folder  # noqa: F401


@pytest.fixture
def folders(tmp_path, monkeypatch):
    monkeypatch.setenv("COOPT_FOLDER_IMAGE_SIZE", str(SIZE))
    return make_folder(tmp_path / "images"), make_folder(tmp_path / "local", good=10)  # each with 2 bad files


def run(tmp_path, folders, share):
    platform, local = folders
    s = folder_settings(tmp_path, platform, **{"upload-local-images": True})
    participants = [PrototypeParticipant(NodeSettings(
        f"efficientnet-lite{i}", device="cpu", partition_id=i, local_data=f"folder:{local}" if i == 2 else "",
        share_local_images=share if i == 2 else True)) for i in range(3)]
    return run_in_process(s, FolderSource(platform), participants)


def test_a_node_that_keeps_its_images_contributes_only_targets(tmp_path, folders, linear_prototypes, caplog):
    with caplog.at_level("INFO", logger="coopt_flower.engine.merging"):
        result = run(tmp_path, folders, share=False)
    [entry] = result.manifest.local_sources
    assert entry.count == 12 and entry.images is None
    assert not list(result.dataset_path.glob("local_images_*.npy"))
    ds = load_optimized_dataset(result.dataset_path)
    assert len(ds) == 60 + 10 and np.isfinite(np.asarray(ds.targets)).all()
    assert any("keeps its 12 local images (node config share-local-images=false)" in r.getMessage()
               for r in caplog.records)


def test_a_consenting_node_uploads_them(tmp_path, folders, linear_prototypes):
    result = run(tmp_path, folders, share=True)
    [entry] = result.manifest.local_sources
    assert entry.images is not None and (result.dataset_path / entry.images).exists()


def test_the_node_refuses_to_send_pixels_even_when_asked(folders, linear_prototypes):
    _, local = folders
    node = NodeSettings("efficientnet-lite0", device="cpu", local_data=f"folder:{local}", share_local_images=False)
    config = EncodeConfig(target_dim=8, projection_seed=1, batch_size=4, image_size=SIZE,
                          scope="local", upload_images=True)
    reply = PrototypeParticipant(node).encode(EncodeRequest(config, ids=np.arange(2, 6, dtype=np.int64)))
    assert "pixels" not in reply.extra and reply.targets.shape == (4, 8)
    consenting = PrototypeParticipant(NodeSettings("efficientnet-lite0", device="cpu", local_data=f"folder:{local}"))
    assert consenting.encode(EncodeRequest(config, ids=np.arange(2, 6, dtype=np.int64))).extra["pixels"].shape[0] == 4


def test_share_local_images_is_read_from_the_node_config():
    class Context:
        run_config = {"prototypes": "efficientnet-lite0"}
        node_config = {"partition-id": 0, "num-partitions": 1, "share-local-images": "false"}

    assert [n.share_local_images for n in hosted_participants(Context())] == [False]
    assert node_flag({}, "share-local-images", default=True) is True
    assert node_flag({"k": False}, "k", default=True) is False
    with pytest.raises(ValueError, match="node config share-local-images must be true or false, got 'maybe'"):
        node_flag({"share-local-images": "maybe"}, "share-local-images", default=True)
