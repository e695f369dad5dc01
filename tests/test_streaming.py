"""Streaming a webdataset export (coopt_flower.streaming) and training from it (stream_training)."""

from __future__ import annotations

import json
import random
import shlex
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from coopt_flower.dataset_format import DatasetIntegrityError
from coopt_flower.export import ExportOptions, export_dataset
from coopt_flower.stream_training import stream_steps, stream_target_stats, train_on_stream
from coopt_flower.streaming import (
    StreamingExport, StreamSpec, expand_urls, rank_samples, rank_shards, shuffled,
)
from coopt_flower.distributed import Distributed
from coopt_flower.target_statistics import target_stats
from coopt_flower.training_loop import TrainConfig
from tests.test_export import make_round

N = 120


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    round_dir = make_round(tmp_path_factory.mktemp("round"), num_samples=N)
    out = export_dataset(round_dir, tmp_path_factory.mktemp("x") / "wds",
                         ExportOptions(format="webdataset", image_format="png", samples_per_shard=25))
    return round_dir, out


@pytest.fixture(scope="module")
def by_id(export):
    """sample id -> (image, target) from the random-access reader (the reference)."""
    from coopt_flower.exported import open_dataset

    ds = open_dataset(export[1])
    return {int(i): ds[k] for k, i in enumerate(ds.sample_ids)}


def test_the_export_records_each_shards_sample_count(export):
    info = json.loads((export[1] / "coopt_export.json").read_text())
    assert info["shard_samples"] == [25, 25, 25, 25, 20]
    assert StreamSpec.from_export(export[1]).shard_samples == (25, 25, 25, 25, 20)


def test_an_epoch_streams_every_sample_once_with_the_random_access_items(export, by_id):
    ds = StreamingExport(StreamSpec.from_export(export[1]), shuffle_buffer=40, seed=1)
    items = list(ds)
    ids = [i for i, _ in StreamingExport(ds.spec, shuffle_buffer=40, seed=1, decode=False)]
    assert sorted(ids) == sorted(by_id) and len(items) == len(ds) == N
    for sample_id, (image, target) in zip(ids, items):
        ref_image, ref_target = by_id[sample_id]
        assert torch.equal(image, ref_image) and torch.equal(target, ref_target)


def test_the_order_is_shuffled_per_epoch_and_reproducible(export):
    spec = StreamSpec.from_export(export[1])

    def order(seed, epoch, buffer=40):
        ds = StreamingExport(spec, shuffle_buffer=buffer, seed=seed, decode=False)
        ds.set_epoch(epoch)
        return [i for i, _ in ds]

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)
    plain = order(0, 0, buffer=0)
    assert plain != sorted(plain)  # shards are shuffled even without a buffer
    assert sorted(order(0, 1)) == sorted(plain)


def test_ranks_and_workers_split_the_shards_without_overlap(export):
    spec = StreamSpec.from_export(export[1])
    seen = []
    for rank in range(2):
        ds = StreamingExport(spec, shuffle_buffer=10, seed=3, rank=rank, world_size=2, decode=False)
        ds.set_epoch(5)
        ids = [int(i) for i, _ in DataLoader(ds, batch_size=None, num_workers=2)]
        assert len(ids) == len(ds) == rank_samples(spec, 3, 5, 2)[rank]
        seen.append(set(ids))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == N
    assert sorted(rank_shards(5, 3, 5, 0, 2) + rank_shards(5, 3, 5, 1, 2)) == list(range(5))


def test_the_shuffle_buffer_keeps_every_item():
    items = list(range(1000))
    out = list(shuffled(iter(items), 64, random.Random(0)))
    assert sorted(out) == items and out != items
    assert list(shuffled(iter(items), 1, random.Random(0))) == items


def test_shard_urls_expand_ranges_and_pipes_stream(export, by_id):
    assert expand_urls("a/data-{000000..000002}.tar :: b.tar") == [
        "a/data-000000.tar", "a/data-000001.tar", "a/data-000002.tar", "b.tar"]
    with pytest.raises(ValueError, match="backwards"):
        expand_urls("x-{3..1}.tar")
    shard = export[1] / "data-{000000..000004}.tar"
    pipe = f"pipe:{shlex.quote(sys.executable)} -c " + shlex.quote(
        "import sys,shutil; shutil.copyfileobj(open(sys.argv[1],'rb'), sys.stdout.buffer)")
    spec = StreamSpec.from_urls(f"{pipe} {shard}")
    assert len(spec.urls) == 5 and spec.num_samples is None
    ids = [int(i) for i, _ in StreamingExport(spec, shuffle_buffer=0, decode=False)]
    assert sorted(ids) == sorted(by_id)


def test_a_missing_or_corrupt_shard_is_named(export, tmp_path):
    spec = StreamSpec.from_export(export[1])
    missing = StreamSpec(spec.urls[:1] + (str(tmp_path / "gone.tar"),), "png", None, None)
    with pytest.raises(DatasetIntegrityError, match="gone.tar: shard cannot be opened"):
        list(StreamingExport(missing, shuffle_buffer=0, decode=False))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(open(spec.urls[0], "rb").read()[:3000])
    with pytest.raises(DatasetIntegrityError, match="cut.tar: not a readable tar shard"):
        list(StreamingExport(StreamSpec((str(cut),), "png", None, None), shuffle_buffer=0, decode=False))


def test_a_pipe_command_that_fails_is_named_even_when_its_tar_reads_whole(export, tmp_path):
    shard = shlex.quote(StreamSpec.from_export(export[1]).urls[0])
    whole_then_fails = StreamSpec((f"pipe:cat {shard}; echo 'HTTP 404' >&2; exit 3",), "png", None, None)
    with pytest.raises(DatasetIntegrityError, match=r"exited with status 3 \(HTTP 404\)"):
        list(StreamingExport(whole_then_fails, shuffle_buffer=0, decode=False))
    nothing = StreamSpec((f"pipe:cat {shlex.quote(str(tmp_path / 'absent.tar'))}",), "png", None, None)
    with pytest.raises(DatasetIntegrityError, match="exited with status 1 .*No such file"):
        list(StreamingExport(nothing, shuffle_buffer=0, decode=False))
    # A reader that stops early stops the command, and that is no failure.
    endless = StreamSpec((f"pipe:cat {shard}; sleep 60",), "png", None, None)
    items = iter(StreamingExport(endless, shuffle_buffer=0, decode=False))
    next(items)
    items.close()


def test_stream_statistics_equal_the_random_access_ones(export):
    from coopt_flower.exported import open_dataset

    streamed = stream_target_stats(StreamSpec.from_export(export[1]))
    direct = target_stats(open_dataset(export[1]))
    assert streamed.count == direct.count == N
    torch.testing.assert_close(streamed.mean, direct.mean)
    torch.testing.assert_close(streamed.std, direct.std)


def test_every_rank_takes_the_same_number_of_steps(export):
    spec = StreamSpec.from_export(export[1])
    assert stream_steps(spec, 32, 3, 0, Distributed()) == 4  # 120 = 3 x 32 + 24
    two = Distributed(rank=0, world_size=2, local_rank=0)
    steps = stream_steps(spec, 32, 3, 0, two)
    from coopt_flower.stream_training import _epoch_key

    fewest = min(min(rank_samples(spec, 0, _epoch_key(0, e), 2)) for e in range(3))
    assert steps == fewest // 16


def test_training_from_the_stream(export, tmp_path):
    spec = StreamSpec.from_export(export[1])
    config = TrainConfig(epochs=2, batch_size=32, device="cpu", seed=0, progress=False,
                         checkpoint_dir=tmp_path / "a")
    result = train_on_stream(spec, config, shuffle_buffer=50)
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
    assert (tmp_path / "a" / "last.pt").is_file()
    again = train_on_stream(spec, TrainConfig(epochs=2, batch_size=32, device="cpu", seed=0, progress=False),
                            shuffle_buffer=50)
    assert again.losses == result.losses  # the same seed, the same stream, the same steps


def test_the_cli_streams_an_export_and_shard_urls(export, tmp_path, capsys):
    from coopt_flower.student_training import main

    args = ["--out", str(tmp_path / "s"), "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--no-progress"]
    assert main(["--dataset", str(export[1]), "--stream", *args]) == 0
    assert len(json.loads(capsys.readouterr().out)["losses"]) == 1
    shards = str(export[1] / "data-{000000..000004}.tar")
    assert main(["--shards", shards, "--out", str(tmp_path / "u"), *args[2:]]) == 0


@pytest.mark.slow
def test_two_gloo_processes_stream_their_own_shards(export, tmp_path):
    import os
    import subprocess

    from coopt_flower.checkpoints import load_checkpoint

    args = ["-m", "coopt_flower.student_training", "--dataset", str(export[1]), "--stream", "--out",
            str(tmp_path / "two"), "--epochs", "2", "--batch-size", "16", "--device", "cpu", "--no-progress",
            "--shuffle-buffer", "20"]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    losses = json.loads(run.stdout)["losses"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    checkpoint = load_checkpoint(tmp_path / "two" / "last.pt")
    assert checkpoint["epoch"] == 2
    spec = StreamSpec.from_export(export[1])
    steps = stream_steps(spec, 16, 2, 0, Distributed(rank=0, world_size=2))
    assert checkpoint["config"]["num_samples"] == steps * 16  # what the two ranks trained per epoch
    assert checkpoint["config"]["input"] == "stream"
