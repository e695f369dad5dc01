"""A disk that fills while a round runs or is published (issue 29, item 1).

The space publishing needs (ids, shared embeddings, manifest, report, plots) is held from the
start, so a round on a disk too small for it fails before any page is encoded, and a disk that
fills while the pages arrive does not stop the publish. A write that fails anyway, at any step
of publishing or recording, stops the run with one line naming the directory, and the advice
in that line is what the rerun then does.
"""

import errno
import shutil
import subprocess

import numpy as np
import pytest

import coopt_flower.dataset_writer as dataset_writer
import coopt_flower.engine.progress as progress_module
from coopt_flower.data import open_source
from coopt_flower.dataset_format import verify_dataset
from coopt_flower.dataset_writer import PUBLISH_FILES_BYTES, RESERVE_FILE, DatasetWriter, publish_reserve_bytes
from coopt_flower.engine import InProcessTransport, progress, run_rounds
from coopt_flower.errors import OutputDirError
from coopt_flower.preflight import estimate_round_bytes
from tests.test_engine_round import LinearParticipant, settings


@pytest.fixture(scope="module")
def fashion():
    return open_source("fashion-mnist")


def mount_tmpfs(path, size):
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    return path


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs (root only), unmounted afterwards."""
    mount = mount_tmpfs(tmp_path / "disk", "8m")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def hidden(directory):
    return sorted(p.name for p in directory.rglob(".*"))


class FillingParticipant(LinearParticipant):
    """Fills the disk of ``disk`` with a file on its first shard page: someone else's data."""

    def __init__(self, source, index, disk):
        super().__init__(source, index)
        self.disk = disk

    def encode(self, request, student=None):
        if request.ids is not None and self.pages == 0:
            with open(self.disk / "someone-elses-file", "ab") as handle:
                try:
                    while True:
                        handle.write(bytes(1 << 16))
                        handle.flush()
                except OSError as error:
                    assert error.errno == errno.ENOSPC
        return super().encode(request, student)


def test_the_reserve_covers_what_publishing_writes(tmp_path, fashion):
    s = settings(tmp_path)
    run_rounds(s, fashion, InProcessTransport([LinearParticipant(fashion, i) for i in range(3)]))
    round_dir = progress.round_dir(s.output_dir, 1)
    streamed = ("targets.npy", "owners.npy")
    published = sum(p.stat().st_size for p in round_dir.iterdir() if p.name not in streamed)
    run_files = sum(p.stat().st_size for p in (tmp_path / "out").iterdir() if p.is_file())
    reserve = publish_reserve_bytes(300, 3 * s.shared_size * s.target_dim * 4)
    assert published + run_files < reserve
    assert estimate_round_bytes(s, 300) >= sum(p.stat().st_size for p in round_dir.iterdir())


def test_the_reserve_is_held_while_pages_arrive_and_gone_once_published(tmp_path):
    with DatasetWriter(tmp_path / "round-001", np.arange(10), 4, reserve_bytes=3 << 20) as writer:
        held = writer.tmp / RESERVE_FILE
        assert held.stat().st_blocks * 512 >= 3 << 20  # allocated, not a sparse file
        writer.write(np.arange(10), np.ones((10, 4), np.float32), owner=0)
        path = writer.commit({"note": "x"})
    assert not (path / RESERVE_FILE).exists() and hidden(tmp_path) == []


def test_a_disk_too_small_to_publish_fails_before_any_page_is_encoded(tmp_path, fashion):
    disk = mount_tmpfs(tmp_path / "disk", "1m")  # holds the targets, not the publish reserve
    try:
        s = settings(disk)
        participants = [LinearParticipant(fashion, i) for i in range(3)]
        with pytest.raises(OutputDirError) as caught:
            run_rounds(s, fashion, InProcessTransport(participants))
        line = str(caught.value)
        assert "\n" not in line and f"no space left on the device of {disk / 'out'}" in line
        assert "MiB more needed to publish round-001" in line and "round 1 is encoded again" in line
        assert [p.pages for p in participants] == [0, 0, 0]  # stopped before the encoding began
        assert hidden(disk) == [] and not (disk / "out" / "round-001").exists()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_disk_that_fills_during_the_round_does_not_stop_the_publish(small_disk, fashion):
    s = settings(small_disk, **{"train-epochs": 0})
    participants = [FillingParticipant(fashion, 0, small_disk)] + [LinearParticipant(fashion, i) for i in (1, 2)]
    state = run_rounds(s, fashion, InProcessTransport(participants))
    assert shutil.disk_usage(small_disk).free < PUBLISH_FILES_BYTES  # the disk did fill up
    round_dir = progress.round_dir(s.output_dir, 1)
    assert verify_dataset(round_dir).num_samples == 300
    assert state["rounds"]["1"] and (small_disk / "out" / progress.SUMMARY_MD).exists()
    assert hidden(small_disk) == []


class WriteFault:
    """ENOSPC on the ``fail_at``-th file write of publishing or recording (counted from 1)."""

    def __init__(self, monkeypatch, fail_at):
        self.calls, self.fail_at, self.where = 0, fail_at, None
        targets = [(dataset_writer, "write_text_atomic"), (dataset_writer, "write_bytes_atomic"),
                   (progress_module, "write_text_atomic"), (progress_module, "write_bytes_atomic")]
        for module, name in targets:
            monkeypatch.setattr(module, name, self.wrap(getattr(module, name), f"{module.__name__}.{name}"))
        monkeypatch.setattr(dataset_writer.np, "save", self.wrap(np.save, "np.save"))

    def wrap(self, real, label):
        def write(*args, **kwargs):
            self.calls += 1
            if self.calls == self.fail_at:
                self.where = label
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(*args, **kwargs)
        return write


def test_a_full_disk_at_every_write_of_publishing_says_what_the_rerun_does(tmp_path, fashion, monkeypatch):
    """Round 2 of a 2-round run fails at its k-th write, for every k: one line, nothing half
    written, round 1 intact; the rerun redoes round 2 exactly when the line says so."""
    s1 = settings(tmp_path / "first", refinement="static", **{"num-server-rounds": 1})
    run_rounds(s1, fashion, InProcessTransport([LinearParticipant(fashion, i) for i in range(3)]))
    first_targets = (tmp_path / "first" / "out" / "round-001" / "targets.npy").read_bytes()
    outcomes = []
    for fail_at in range(1, 40):
        base = tmp_path / f"k{fail_at}"
        shutil.copytree(tmp_path / "first", base)
        s = settings(base, refinement="static", **{"num-server-rounds": 2})
        with monkeypatch.context() as patch:
            fault = WriteFault(patch, fail_at)
            try:
                run_rounds(s, fashion, InProcessTransport([LinearParticipant(fashion, i) for i in range(3)]))
            except OutputDirError as error:
                line = str(error)
            else:
                assert fault.where is None, f"a full disk at {fault.where} went unreported"
                break  # past the last write: every step has been failed once
        out = base / "out"
        assert "\n" not in line and f"no space left on the device of {out}" in line, (fault.where, line)
        assert hidden(out) == [], (fault.where, hidden(out))
        assert (out / "round-001" / "targets.npy").read_bytes() == first_targets
        if "round 2 was not published" in line:
            assert "rounds 1-1 are kept, round 2 is encoded again" in line and "MiB more" in line
            kind, encodes = "round 2 redone", True
        elif "round 1 is published and kept" in line:  # the records after round 1, rewritten
            kind, encodes = "round 1 records", True
        else:
            assert "round 2 is published and kept" in line, line
            assert verify_dataset(out / "round-002").num_samples == 300
            kind, encodes = "round 2 kept", False
        assert (out / "round-002").exists() == (not encodes)
        rerun = [LinearParticipant(fashion, i) for i in range(3)]
        state = run_rounds(s, fashion, InProcessTransport(rerun))
        assert sorted(state["rounds"]) == ["1", "2"] and (out / progress.SUMMARY_MD).exists()
        assert (sum(p.pages for p in rerun) > 0) == encodes, (fault.where, line)
        outcomes.append((fault.where, kind))
    else:
        pytest.fail("publishing never got past the injected faults")
    # Every kind was hit: the records after round 1, writes inside round 2's dataset (redone),
    # and the records after it (kept).
    assert {kind for _, kind in outcomes} == {"round 1 records", "round 2 redone", "round 2 kept"}, outcomes
