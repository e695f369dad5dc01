"""The refactor check (simulations.check_identical): two rounds compared file by file."""

import numpy as np

from simulations.check_identical import main


def write_round(path, targets):
    path.mkdir(parents=True)
    np.save(path / "targets.npy", targets)
    np.save(path / "sample_ids.npy", np.arange(len(targets)))
    np.save(path / "owners.npy", np.zeros(len(targets), np.int16))
    return path


def test_two_rounds_are_identical_only_when_every_data_file_is(tmp_path, capsys):
    a = write_round(tmp_path / "a", np.ones((3, 2), np.float16))
    b = write_round(tmp_path / "b", np.ones((3, 2), np.float16))
    c = write_round(tmp_path / "c", np.full((3, 2), 2, np.float16))
    assert main(["--against", str(a), "--round-dir", str(b)]) == 0
    assert capsys.readouterr().out.strip() == "identical"
    assert main(["--against", str(a), "--round-dir", str(c)]) == 1
    assert capsys.readouterr().out.splitlines()[0].startswith("targets.npy: ")


def test_a_round_matches_the_record_or_one_of_its_recorded_variants(tmp_path, monkeypatch):
    import json

    import simulations.check_identical as check

    base = check.dataset_checksums(write_round(tmp_path / "base", np.ones((3, 2), np.float16)))
    other = check.dataset_checksums(write_round(tmp_path / "other", np.zeros((3, 2), np.float16)))
    write_round(tmp_path / "third", np.full((3, 2), 3, np.float16))
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"sha256": base, "variants": [{"seen_on": "elsewhere", "sha256": other}]}))
    monkeypatch.setattr(check, "RECORD", record)
    assert check.compare(tmp_path / "base") == [] and check.compare(tmp_path / "other") == []
    assert check.compare(tmp_path / "third") == [f"targets.npy: recorded {base['targets.npy'][:12]}..., "
                                                  f"got {check.dataset_checksums(tmp_path / 'third')['targets.npy'][:12]}..."]
