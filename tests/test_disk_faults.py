"""Full disks and unwritable output directories fail cleanly: one line, nothing left behind.

Real filesystems where the machine allows it (a 2 MiB tmpfs, a read-only tmpfs, ``chattr +i``;
these need root and are skipped otherwise), and a fault-injected ``posix_fallocate`` everywhere.
"""

import errno
import os
import subprocess

import numpy as np
import pytest

import coopt_flower.dataset_writer as dataset_writer
from coopt_flower.config import RunSettings
from coopt_flower.data import open_source
from coopt_flower.dataset_writer import DatasetWriter, publish_reserve_bytes
from coopt_flower.errors import OutputDirError
from coopt_flower.preflight import check_disk_space, check_output_dir, preflight
from coopt_flower.engine import run_in_process
from tests.test_engine_round import LinearParticipant


def settings(out, **overrides):
    values = {"prototypes": "efficientnet-lite0,efficientnet-lite1,efficientnet-lite2", "num-samples": 300,
              "shared-size": 32, "target-dim": 16, "page-size": 40, "seed": 1, "output-dir": str(out),
              **overrides}
    return RunSettings.from_run_config(values)


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MiB tmpfs (root only); unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_writer_on_a_full_tmpfs_raises_one_line_and_leaves_nothing(tmpfs):
    ids = np.arange(200_000)  # 200k x 16 float16 = 6.1 MiB > 2 MiB
    with pytest.raises(OutputDirError) as caught:
        DatasetWriter(tmpfs / "round-001", ids, 16, "float16")
    assert "no space left" in str(caught.value) and "\n" not in str(caught.value)
    assert list(tmpfs.iterdir()) == []


def test_preflight_refuses_a_run_that_does_not_fit(tmpfs):
    s = settings(tmpfs / "out", **{"num-samples": 60000, "target-dim": 64, "shared-size": 64})
    with pytest.raises(OutputDirError, match=r"MiB free, the run's datasets \(with their reports and plots\) need about .* MiB"):
        preflight(s)
    assert not (tmpfs / "out").exists()  # refused before anything: not even the directory


def test_a_round_on_a_full_disk_fails_cleanly_and_the_rerun_succeeds(tmp_path, monkeypatch):
    """Fault injection: the reservation of targets.npy fails as on a full disk."""
    fashion = open_source("fashion-mnist")
    s = settings(tmp_path / "out")
    check_output_dir(s)
    real = os.posix_fallocate

    def full_disk(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dataset_writer.os, "posix_fallocate", full_disk)
    with pytest.raises(OutputDirError, match="no space left on the device of"):
        run_in_process(s, fashion, [LinearParticipant(fashion, i) for i in range(3)])
    assert leftovers(tmp_path / "out") == []
    monkeypatch.setattr(dataset_writer.os, "posix_fallocate", real)
    result = run_in_process(s, fashion, [LinearParticipant(fashion, i) for i in range(3)])
    assert result.manifest.num_samples == 300


def test_stale_temporaries_of_a_crashed_run_are_removed_first(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".round-001.tmp-123-456").mkdir()
    (out / ".round-001.tmp-123-456" / "targets.npy").write_bytes(b"x" * 1000)
    (out / ".run.json.tmp-123").write_text("{")
    check_output_dir(settings(out))
    assert leftovers(out) == [] and not (out / "run.json").exists()  # claimed only when data is written


def test_disk_estimate_counts_targets_shared_embeddings_and_what_publishing_writes(tmp_path):
    s = settings(tmp_path, **{"num-samples": 1000, "target-dim": 64})
    needed = check_disk_space(s, 1000)
    assert needed == 1000 * (64 * 2 + 2) + publish_reserve_bytes(1000, 3 * 32 * 64 * 4)
    assert publish_reserve_bytes(1000, 0) > 1000 * 8 + (1 << 20)  # ids, plus reports and plots


def test_read_only_output_dir_is_one_line(tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        with pytest.raises(OutputDirError) as caught:
            check_output_dir(settings(mount / "out"))
        assert "read-only filesystem" in str(caught.value) and "\n" not in str(caught.value)
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_immutable_output_dir_is_one_line(tmp_path):
    out = tmp_path / "immutable"
    out.mkdir()
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not allowed here")
    try:
        with pytest.raises(OutputDirError) as caught:
            check_output_dir(settings(out))
        assert "not permitted (immutable" in str(caught.value) and "\n" not in str(caught.value)
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    assert list(out.iterdir()) == []


def test_output_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="is a file, not a directory"):
        check_output_dir(settings(tmp_path / "file"))


def test_unwritable_output_dir_fault_injected(tmp_path, monkeypatch):
    """Permission denied (as for a directory of another user; root ignores chmod)."""
    import coopt_flower.atomic as atomic

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(atomic.os, "open", denied)
    with pytest.raises(OutputDirError, match="permission denied; choose an output-dir this user can write"):
        check_output_dir(settings(tmp_path / "out"))
