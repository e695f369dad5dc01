"""The dataset's schema (coopt_flower.manifest): typed, tolerant of older datasets."""

from coopt_flower.manifest import LocalSource, Manifest, ParticipantRecord
from coopt_flower.merges import Merge


def test_a_dataset_written_before_the_merge_key_reads_as_align_ridge():
    old = Manifest.from_json({"round": 2, "source": "s", "num_samples": 3, "target_dim": 4,
                              "target_dtype": "float16", "shared_ids": [1, 2], "something-new": 1,
                              "participants": [{"name": "p0", "prototype": "a", "future_key": 0}]})
    assert old.merge == Merge.ALIGN_RIDGE and not old.is_heads and old.shared_size == 2
    assert old.participants == [ParticipantRecord(name="p0", prototype="a")]


def test_report_and_manifest_views_split_the_record_and_round_trip():
    m = Manifest(round=1, source="s", num_samples=3, target_dim=4, target_dtype="float32", merge=Merge.HEADS,
                 exposed_head="p0", dataset_path="/d", plots=["a.png"], shared_ids=[5],
                 participants=[ParticipantRecord(name="p0", prototype="a")],
                 local_sources=[LocalSource("p0", "a", "folder:/x", 10, 2, None)])
    report, manifest = m.report_json(), m.manifest_json()
    assert "dataset_path" in report and "shared_ids" not in report and report["merge"] == "heads"
    assert "dataset_path" not in manifest and "plots" not in manifest and manifest["shared_ids"] == [5]
    assert "num_bad_samples" not in manifest  # optional keys stay off when there is nothing to say
    back = Manifest.from_json(manifest)
    assert back.is_heads and back.exposed_head == "p0" and back.local_sources[0].holds(11)
    assert not back.local_sources[0].holds(12) and back.participant("p0").prototype == "a"
    assert list(report)[:5] == ["round", "source", "num_samples", "target_dim", "target_dtype"]
