"""merge = "heads": the round writes every participant's own space, the student trains a head each."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from coopt_flower.merges import MERGE_CHOICES
from coopt_flower.augment import TrainAugment
from coopt_flower.checkpoints import load_checkpoint, load_student
from coopt_flower.config import ConfigError
from coopt_flower.data import open_source
from coopt_flower.dataset_format import load_optimized_dataset
from coopt_flower.heads import owner_target_stats, train_on_heads
from coopt_flower.losses import HeadsLoss
from coopt_flower.engine import run_in_process
from coopt_flower.students import SmallCNN, StudentWithHeads
from coopt_flower.training_loop import TrainConfig
from tests.test_engine_round import LinearParticipant, settings


@pytest.fixture(scope="module")
def fashion():
    return open_source("fashion-mnist")


@pytest.fixture(scope="module")
def heads_round(tmp_path_factory, fashion):
    """The same three participants merged with alignment and with heads."""
    out = tmp_path_factory.mktemp("heads")
    results = {}
    for merge in ("align-ridge", "heads"):
        s = settings(out / merge, merge=merge)
        results[merge] = run_in_process(s, fashion, [LinearParticipant(fashion, i) for i in range(3)])
    return results


def test_merge_is_one_run_config_key_with_listed_values(tmp_path):
    assert MERGE_CHOICES[0] == "align-ridge" and "heads" in MERGE_CHOICES
    assert settings(tmp_path).merge == "align-ridge"
    with pytest.raises(ConfigError, match="merge must be one of align-ridge, align-procrustes, align-cca, heads.*'ridge'"):
        settings(tmp_path, merge="ridge")


def test_a_heads_round_writes_every_participant_in_its_own_space(heads_round):
    aligned, heads = heads_round["align-ridge"], heads_round["heads"]
    a, h = load_optimized_dataset(aligned.dataset_path), load_optimized_dataset(heads.dataset_path)
    assert h.merge == "heads" and a.merge == "align-ridge"
    assert h.manifest.merge == "heads" and a.manifest.exposed_head is None
    # Scores and the reference are the aligned round's; the exposed head is the reference's.
    assert heads.plan.alignment.reference == aligned.plan.alignment.reference == h.manifest.exposed_head
    assert heads.plan.alignment.uniform_values == aligned.plan.alignment.uniform_values
    assert all(m.is_identity for m in heads.plan.alignment.maps.values())
    assert all(p.holdout_residual == 0.0 for p in h.manifest.participants)
    # Same shards; the reference's rows agree, every other participant's are its raw targets.
    np.testing.assert_array_equal(np.asarray(h.owners), np.asarray(a.owners))
    ref = h.manifest.participant_names.index(heads.plan.alignment.reference)
    own = np.asarray(h.owners) == ref
    np.testing.assert_array_equal(np.asarray(h.targets)[own], np.asarray(a.targets)[own])
    assert not np.allclose(np.asarray(h.targets)[~own], np.asarray(a.targets)[~own])
    rows = np.flatnonzero(np.asarray(h.owners) == (ref + 1) % 3)[:5]
    participant = LinearParticipant(open_source("fashion-mnist"), (ref + 1) % 3)
    from coopt_flower.protocol import EncodeConfig, EncodeRequest

    raw = participant.encode(EncodeRequest(EncodeConfig(target_dim=16), ids=h.sample_ids[rows])).targets
    np.testing.assert_allclose(np.asarray(h.targets)[rows], raw, rtol=1e-2, atol=1e-2)  # float16 on disk
    assert "merge `heads`" in (heads.dataset_path / "report.md").read_text()


def test_heads_loss_zscores_per_owner_and_trains_only_the_owners_head():
    mean = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    std = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    loss_fn = HeadsLoss(mean, std)
    targets = torch.tensor([[1.0, 0.0], [12.0, 10.0]])  # both z-score to (1, 0)
    owners = torch.tensor([0, 1])
    assert float(loss_fn(torch.tensor([[3.0, 0.0], [5.0, 0.0]]), targets, owners)) == pytest.approx(0.0)

    torch.manual_seed(0)
    model = StudentWithHeads(SmallCNN(widths=(4, 8)), 2, num_heads=3, exposed_head=2)
    x = torch.rand(4, 3, 8, 8)
    loss_fn(model(x, torch.tensor([0, 0, 1, 1])), targets.repeat(2, 1), torch.tensor([0, 1, 0, 1])).backward()
    assert model.heads[0].weight.grad.abs().sum() > 0 and model.heads[1].weight.grad.abs().sum() > 0
    assert model.heads[2].weight.grad is None  # nobody owned by 2: untouched
    assert model.head is model.heads[2]
    torch.testing.assert_close(model(x), model.heads[2](model.backbone(x)))


def test_owner_target_stats_are_each_owners_own():
    rng = np.random.default_rng(0)
    targets = np.concatenate([rng.normal(0, 1, (50, 3)), rng.normal(5, 3, (30, 3))]).astype(np.float32)
    owners = np.repeat([0, 2], [50, 30])
    mean, std, counts = owner_target_stats(targets, owners, 3)
    assert counts == [50, 0, 30]
    np.testing.assert_allclose(mean[2], targets[50:].mean(0), rtol=1e-5)
    np.testing.assert_allclose(std[0], targets[:50].std(0), rtol=1e-5)
    assert torch.equal(mean[1], torch.zeros(3)) and torch.equal(std[1], torch.ones(3))
    with pytest.raises(ValueError, match="owners must index the 2 participants"):
        owner_target_stats(targets, owners, 2)


def _rotation_problem(n=256, dim=8, seed=0):
    """Solid-color images; owner 0's targets are a linear map of the color, owner 1's the same
    targets rotated by a known orthogonal matrix (two prototypes that see the same thing in
    different coordinates). Returns images, both owners' targets of every image, owners."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(0, 256, (n, 3))
    images = torch.from_numpy(np.broadcast_to(colors[:, :, None, None], (n, 3, 8, 8)).astype(np.uint8).copy())
    base = (colors / 255.0 - 0.5) @ rng.normal(size=(3, dim))
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    both = np.stack([base, base @ rotation]).astype(np.float32)  # (2, n, dim)
    owners = np.arange(n) % 2
    return images, both, owners


def test_heads_recover_two_prototypes_that_are_rotations_of_each_other():
    images, both, owners = _rotation_problem()
    targets = torch.from_numpy(both[owners, np.arange(len(owners))])
    data = TensorDataset(images, targets, torch.from_numpy(owners))
    # No augmentation but the resize: the toy targets are a function of the exact color.
    still = TrainAugment(8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)
    config = TrainConfig(arch="small-cnn", arch_kwargs={"widths": (16, 32)}, image_size=8, epochs=40,
                         batch_size=32, lr=3e-3, seed=0, augment=still, progress=False)
    result = train_on_heads(data, config)
    assert np.mean(result.losses[-3:]) < 0.05, result.losses[-5:]  # 1 - cos: near zero
    # Both heads predict their own space for every image, also those the other owner encoded.
    model = result.model.eval()
    mean, std, _ = owner_target_stats(targets, owners, 2)
    x = still(images, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model.backbone(x)
        for k in (0, 1):
            z = (torch.from_numpy(both[k]) - mean[k]) / std[k]
            cos = torch.nn.functional.cosine_similarity(model.heads[k](features), z, dim=1)
            assert float(cos.mean()) > 0.97, (k, float(cos.mean()))

    # One head on the same mixed targets (the unaligned merge) cannot fit both spaces.
    from coopt_flower.student_training import train_on_optimized

    single = train_on_optimized(TensorDataset(images, targets), config)
    assert np.mean(single.losses[-3:]) > 5 * np.mean(result.losses[-3:])



def test_a_heads_dataset_trains_through_the_cli_and_load_student_reads_the_exposed_head(heads_round, tmp_path,
                                                                                       capsys):
    from coopt_flower.student_training import main

    path = heads_round["heads"].dataset_path
    out = tmp_path / "student"
    assert main(["--dataset", str(path), "--out", str(out), "--epochs", "1", "--image-size", "16",
                 "--batch-size", "64", "--device", "cpu", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["losses"]) == 1 and np.isfinite(summary["losses"][0])
    ckpt = load_checkpoint(out)
    manifest = load_optimized_dataset(path, verify=False).manifest
    cfg = ckpt["config"]
    assert cfg["method"] == "coopt-heads" and cfg["merge"] == "heads" and cfg["num_heads"] == 3
    assert cfg["head_names"] == ["p0", "p1", "p2"] and cfg["exposed_head"] == manifest.exposed_head
    assert cfg["samples_per_head"] == np.bincount(np.load(path / "owners.npy")).tolist()
    assert ckpt["target_mean"].shape == ckpt["target_std"].shape == (3, 16)
    backbone, head, _ = load_student(out)
    exposed = cfg["exposed_head_index"]
    torch.testing.assert_close(head.weight, ckpt["model"][f"heads.{exposed}.weight"])
    assert backbone.feature_dim == head.in_features and head.out_features == 16


def test_the_student_payload_of_a_heads_student_encodes_with_the_reference_head(heads_round, tmp_path):
    from coopt_flower.round_student import student_from_payload, student_payload, train_round_student

    path = heads_round["heads"].dataset_path
    result = train_round_student(path, tmp_path / "student", epochs=1, image_size=16, batch_size=64,
                                 probe_data="")
    state, config = student_payload(result["checkpoint"])
    ckpt = load_checkpoint(result["checkpoint"])
    reference = heads_round["heads"].plan.alignment.reference
    index = ckpt["config"]["head_names"].index(reference)
    assert ckpt["config"]["exposed_head"] == reference
    np.testing.assert_array_equal(state["head.weight"], ckpt["model"][f"heads.{index}.weight"].numpy())
    assert not any(key.startswith("heads.") for key in state)

    # The prototype a participant rebuilds encodes backbone -> the reference's head, as the
    # whole heads model does without owners and as a `student:` spec of the checkpoint does.
    from coopt_flower.prototypes import create_prototype, student_prototype

    rebuilt = student_from_payload(state, config)
    model = StudentWithHeads(load_student(result["checkpoint"])[0], 16, 3, index)
    model.load_state_dict(ckpt["model"])
    whole = student_prototype(model, ckpt["config"], spec="student:whole")
    other = student_prototype(StudentWithHeads(model.backbone, 16, 3, (index + 1) % 3).eval(),
                              ckpt["config"], spec="student:other")
    other.module.load_state_dict(ckpt["model"])
    pixels = open_source("fashion-mnist").images(np.arange(8))
    encoded = rebuilt.encode(pixels)
    np.testing.assert_allclose(encoded, whole.encode(pixels), atol=1e-5)
    np.testing.assert_allclose(encoded, create_prototype(f"student:{result['checkpoint']}").encode(pixels),
                               atol=1e-5)
    assert not np.allclose(encoded, other.encode(pixels), atol=1e-3)
