"""The heterogeneous pool study (simulations.heterogeneous_pool): spread, per-class oracle, in-house model."""

import json

import numpy as np
import pytest

from simulations import heterogeneous_pool as H


def _probe(val_per_class, test_per_class):
    return {"val_acc": float(np.mean(val_per_class)), "test_acc": float(np.mean(test_per_class)),
            "val_per_class": list(val_per_class), "test_per_class": list(test_per_class)}


def test_the_oracle_picks_per_class_on_validation_and_scores_on_test():
    k = len(H.CLASSES)
    a = _probe([0.9] * k, [0.9] * k)                              # best overall
    b = _probe([0.95] + [0.5] * (k - 1), [0.99] + [0.5] * (k - 1))  # best on class 0 only
    # c looks best on class 1 on validation, but is worse on test: the oracle pays for it.
    c = _probe([0.5, 0.97] + [0.5] * (k - 2), [0.5, 0.6] + [0.5] * (k - 2))
    o = H.oracle({"a": a, "b": b, "c": c})
    assert o["best_single"] == "a" and o["per_class_picks"][:3] == ["b", "c", "a"]
    expected = (0.99 + 0.6 + 0.9 * (k - 2)) / k
    assert o["per_class_oracle_test_acc"] == pytest.approx(expected)
    assert o["oracle_minus_best_points"] == pytest.approx(100 * (expected - 0.9))
    assert o["spread_points"] == pytest.approx(100 * (0.9 - c["test_acc"]))


@pytest.mark.slow
def test_a_tiny_pool_trains_its_in_house_model_on_private_images_and_writes_a_runnable_config(tmp_path):
    from simulations.benchmark.config import load_config

    out, config = tmp_path / "out", tmp_path / "pool.yaml"
    H.main(["--config", "simulations/configs/benchmark-tiny.yaml", "--num-private", "128", "--inhouse-epochs", "1",
            "--inhouse-dir", str(tmp_path / "inhouse"), "--cache-dir", str(tmp_path / "cache"),
            "--out-dir", str(out), "--pool-config", str(config), "--others", "random:efficientnet-lite0"])
    results = json.loads((out / "pool.json").read_text())
    inhouse = f"student:{tmp_path / 'inhouse' / 'last.pt'}"
    assert results["pool"] == [inhouse, "random:efficientnet-lite0"]
    assert results["inhouse"]["num_private"] == 128 and results["sizes"][inhouse] == 32
    assert set(results["oracle"]) >= {"best_single", "per_class_oracle_test_acc", "spread_points"}
    assert all(len(p["test_per_class"]) == len(H.CLASSES) for p in results["probes"].values())
    cfg = load_config(config)
    assert cfg.prototypes == (inhouse, "random:efficientnet-lite0") and cfg.proto_size(inhouse) == 0
    assert "in-house" in (out / "pool.md").read_text()
    tiny = load_config("simulations/configs/benchmark-tiny.yaml")
    assert {k: results["inhouse"][k] for k in H.INHOUSE_SETTINGS} == {k: getattr(tiny, k) for k in H.INHOUSE_SETTINGS}


def test_the_in_house_model_is_reused_only_when_trained_with_the_same_settings(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import numpy as np

    from simulations.benchmark.config import load_config

    cfg = load_config("simulations/configs/benchmark-tiny.yaml")
    ids = np.arange(5, dtype=np.int64)
    monkeypatch.setattr(H, "private_ids", lambda *a: ids)

    class Train:  # the private images the in-house model would train on
        def __len__(self):
            return 1000

        def images(self, i):
            return np.zeros((len(i), 28, 28, 1), np.uint8)

        def labels(self, i):
            return np.zeros(len(i), np.int64)

    data = SimpleNamespace(union=np.array([100]), val_ids=np.array([101]), train=Train())
    (tmp_path / "last.pt").write_bytes(b"checkpoint")
    record = {"ids_sha256": H.hashlib.sha256(ids.tobytes()).hexdigest(), "epochs": 2,
              **{k: getattr(cfg, k) for k in H.INHOUSE_SETTINGS}}
    (tmp_path / "inhouse.json").write_text(json.dumps(record))
    assert H.train_inhouse(cfg, data, tmp_path, num_private=5, epochs=2, seed=0) == record  # reused
    trained = []
    monkeypatch.setattr("coopt_flower.student_training.train_supervised",
                        lambda *a, **k: trained.append(k) or SimpleNamespace(losses=[0.5]))
    other = H.replace(cfg, lr=cfg.lr * 2)  # another rate: another model, retrained
    assert H.train_inhouse(other, data, tmp_path, num_private=5, epochs=2, seed=0)["lr"] == cfg.lr * 2
    assert len(trained) == 1
