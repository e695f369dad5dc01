"""merge = "multi-teacher": pair maps fitted on S, every head trained on every sample."""

import json

import numpy as np
import pytest
import torch

from coopt_flower.checkpoints import load_checkpoint, load_student
from coopt_flower.data import open_source
from coopt_flower.dataset_format import load_optimized_dataset
from coopt_flower.engine import run_in_process
from coopt_flower.heads import teacher_targets
from coopt_flower.losses import MultiTeacherLoss
from coopt_flower.merges import MERGE_CHOICES, Merge
from coopt_flower.multi_teacher import TeacherTargets, fit_pair_maps
from coopt_flower.students import SmallCNN, StudentWithHeads
from tests.test_engine_round import LinearParticipant, settings


def _related_spaces(k=3, m=200, n=6, seed=0):
    """``k`` participants whose embeddings of S are affine maps of one another (exactly)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(m, n))
    maps = [np.eye(n)] + [rng.normal(size=(n, n)) for _ in range(k - 1)]
    shifts = [np.zeros(n)] + [rng.normal(size=n) for _ in range(k - 1)]
    return np.stack([base @ a + b for a, b in zip(maps, shifts)]).astype(np.float32)


def test_pair_maps_recover_affine_relations_with_the_identity_on_the_diagonal():
    shared = _related_spaces()
    maps = fit_pair_maps(shared, seed=0)
    assert maps.weight.shape == (3, 3, 6, 6) and maps.bias.shape == (3, 3, 6)
    for j in range(3):
        np.testing.assert_array_equal(maps.weight[j, j], np.eye(6, dtype=np.float32))
        assert maps.confidence[j, j] == 1.0
        for t in range(3):
            predicted = shared[j] @ maps.weight[j, t] + maps.bias[j, t]
            # Ridge shrinks a little: within 6 % of the target's norm (unrelated spaces: ~100 %).
            assert np.linalg.norm(predicted - shared[t]) < 0.06 * np.linalg.norm(shared[t]), (j, t)
    assert (maps.confidence > 0.99).all()


def test_a_map_that_explains_nothing_gets_no_confidence():
    rng = np.random.default_rng(1)
    shared = rng.normal(size=(2, 300, 5)).astype(np.float32)  # two unrelated spaces
    maps = fit_pair_maps(shared, seed=0)
    assert maps.confidence[0, 1] < 0.1 and maps.confidence[1, 0] < 0.1


def test_teacher_targets_are_exact_for_the_owner_and_for_s_and_predicted_elsewhere():
    shared = _related_spaces(m=50)
    maps = fit_pair_maps(shared, seed=0)
    rows_of_s = np.array([-1, 0, -1, 7])  # rows 1 and 3 are S's 0th and 7th image
    teachers = TeacherTargets(maps, shared, rows_of_s)
    targets = torch.tensor(np.stack([shared[0, 3], shared[1, 0], shared[2, 9], shared[0, 7]]))
    owners = torch.tensor([0, 1, 2, 0])
    out, weights = teachers(targets, owners, torch.arange(4))
    assert out.shape == (4, 3, 6) and weights.shape == (4, 3)
    for b, j in enumerate(owners.tolist()):
        torch.testing.assert_close(out[b, j], targets[b], rtol=0, atol=0)
    torch.testing.assert_close(out[1], torch.from_numpy(shared[:, 0]))  # in S: all exact, weight 1
    torch.testing.assert_close(out[3], torch.from_numpy(shared[:, 7]))
    assert torch.equal(weights[1], torch.ones(3)) and torch.equal(weights[3], torch.ones(3))
    expected = targets[2].numpy() @ maps.weight[2, 0] + maps.bias[2, 0]
    np.testing.assert_allclose(out[2, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert float(weights[2, 0]) == pytest.approx(float(maps.confidence[2, 0]))
    # Without row indices nothing is looked up in S: row 1's other heads are predictions.
    out_no_rows, _ = teachers(targets, owners)
    assert not torch.allclose(out_no_rows[1, 0], torch.from_numpy(shared[0, 0]), atol=1e-6)


def test_multi_teacher_loss_weights_targets_and_zscores_per_head():
    loss_fn = MultiTeacherLoss(torch.tensor([[0.0, 0.0], [10.0, 10.0]]), torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    targets = torch.tensor([[[1.0, 0.0], [12.0, 10.0]]])  # both heads z-score to (1, 0)
    right = torch.tensor([[[2.0, 0.0], [3.0, 0.0]]])
    wrong = torch.tensor([[[2.0, 0.0], [0.0, 3.0]]])  # head 1 orthogonal: 1 - cos = 1
    assert float(loss_fn(right, targets, torch.ones(1, 2))) == pytest.approx(0.0, abs=1e-6)
    assert float(loss_fn(wrong, targets, torch.ones(1, 2))) == pytest.approx(0.5)
    assert float(loss_fn(wrong, targets, torch.tensor([[1.0, 0.0]]))) == pytest.approx(0.0, abs=1e-6)
    assert float(loss_fn(wrong, targets, torch.tensor([[1.0, 3.0]]))) == pytest.approx(0.75)
    two_views = torch.cat([right, wrong])
    assert float(loss_fn(two_views, targets, torch.ones(1, 2))) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="whole views"):
        loss_fn(right[:, :1], targets, torch.ones(1, 2))


def test_every_head_gets_a_gradient_from_a_batch_of_one_owner():
    torch.manual_seed(0)
    model = StudentWithHeads(SmallCNN(widths=(4, 8)), 2, num_heads=3, exposed_head=1)
    x = torch.rand(4, 3, 8, 8)
    out = model.all_heads(x)
    assert out.shape == (4, 3, 2)
    torch.testing.assert_close(out[:, 1], model(x))
    loss_fn = MultiTeacherLoss(torch.zeros(3, 2), torch.ones(3, 2))
    loss_fn(out, torch.rand(4, 3, 2), torch.ones(4, 3)).backward()
    assert all(head.weight.grad.abs().sum() > 0 for head in model.heads)


@pytest.fixture(scope="module")
def multi_round(tmp_path_factory):
    fashion = open_source("fashion-mnist")
    s = settings(tmp_path_factory.mktemp("multi"), merge="multi-teacher")
    return run_in_process(s, fashion, [LinearParticipant(fashion, i) for i in range(3)])


def test_a_multi_teacher_round_writes_owner_spaces_and_every_participants_s(multi_round):
    assert "multi-teacher" in MERGE_CHOICES and Merge("multi-teacher").per_owner_spaces
    data = load_optimized_dataset(multi_round.dataset_path)
    m = data.manifest
    assert m.merge == "multi-teacher" and m.is_heads and m.exposed_head == multi_round.plan.alignment.reference
    assert all(map_.is_identity for map_ in multi_round.plan.alignment.maps.values())
    shared = data.shared_embeddings()
    assert shared.shape == (3, m.shared_size, 16) and shared.dtype == np.float32
    assert "merge `multi-teacher`" in (multi_round.dataset_path / "report.md").read_text()
    # S's rows hold their owner's embedding of S, so the row lookup finds every S image.
    teachers = teacher_targets(data, seed=0)
    rows = np.flatnonzero(teachers.shared_rows.numpy() >= 0)
    assert len(rows) == m.shared_size
    pos = teachers.shared_rows.numpy()[rows]
    np.testing.assert_array_equal(data.sample_ids[rows], np.asarray(m.shared_ids)[pos])
    owners = np.asarray(data.owners)[rows]
    np.testing.assert_allclose(np.asarray(data.targets)[rows], shared[owners, pos], rtol=1e-2, atol=1e-2)


def test_a_shared_embeddings_file_of_the_wrong_shape_is_refused(multi_round, tmp_path):
    import shutil

    from coopt_flower.dataset_format import DatasetIntegrityError

    copy = tmp_path / "copy"
    shutil.copytree(multi_round.dataset_path, copy)
    np.save(copy / "shared_embeddings.npy", np.zeros((2, 3, 16), np.float32))
    with pytest.raises(DatasetIntegrityError, match="shared_embeddings.npy holds float32 \\(2, 3, 16\\)"):
        load_optimized_dataset(copy, verify=False).shared_embeddings()


def test_a_multi_teacher_dataset_trains_every_head_through_the_cli(multi_round, tmp_path, capsys):
    from coopt_flower.student_training import main

    out = tmp_path / "student"
    assert main(["--dataset", str(multi_round.dataset_path), "--out", str(out), "--epochs", "1",
                 "--image-size", "16", "--batch-size", "64", "--device", "cpu", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert np.isfinite(summary["losses"][0])
    ckpt = load_checkpoint(out)
    cfg = ckpt["config"]
    assert cfg["method"] == "coopt-multi-teacher" and cfg["merge"] == "multi-teacher" and cfg["num_heads"] == 3
    assert cfg["exposed_head"] == multi_round.plan.alignment.reference
    backbone, head, _ = load_student(out)
    torch.testing.assert_close(head.weight, ckpt["model"][f"heads.{cfg['exposed_head_index']}.weight"])


def test_reading_item_by_item_trains_the_same_student_as_preloading(multi_round):
    from coopt_flower.student_training import train_on_optimized
    from coopt_flower.training_loop import TrainConfig

    data = load_optimized_dataset(multi_round.dataset_path)
    runs = []
    for preload in (True, False):
        config = TrainConfig(arch="small-cnn", arch_kwargs={"widths": (4, 8)}, image_size=16, epochs=1,
                             batch_size=64, seed=0, progress=False, preload=preload)
        runs.append(train_on_optimized(data, config))
    assert runs[0].losses == pytest.approx(runs[1].losses, rel=1e-4)
