"""Images that cannot be decoded are the data's fault: skipped, listed, never a node's failure.

Rounds run in-process (:func:`coopt_flower.engine.run_in_process`) with the real
:class:`~coopt_flower.participant.PrototypeParticipant`, whose prototype is swapped for a tiny
linear one so the tests stay fast.
"""

import io
import json

import numpy as np
import pytest
from PIL import Image

import coopt_flower.participant as participant_module
from coopt_flower.bad_samples import BadSampleError
from coopt_flower.config import RunSettings
from coopt_flower.data import FolderSource, ScreenedSource
from coopt_flower.dataset_format import load_optimized_dataset, read_manifest
from coopt_flower.image_decoding import open_rgb
from coopt_flower.participant import NodeSettings, PrototypeParticipant
from coopt_flower.preflight import preflight
from coopt_flower.engine import run_in_process

SIZE = 8


class LinearPrototype:
    """Features = a fixed linear map of the pixels (stands in for a real network)."""

    def __init__(self, seed):
        self.spec, self.output_dim, self.native_size, self.image_size = f"linear-{seed}", 12, SIZE, SIZE
        self.weight = np.random.default_rng(seed).normal(size=(SIZE * SIZE * 3, 12)).astype(np.float32)

    def encode(self, batch):
        return (np.asarray(batch, np.float32).reshape(len(batch), -1) / 255.0) @ self.weight


@pytest.fixture
def linear_prototypes(monkeypatch):
    monkeypatch.setattr(participant_module, "load_prototype",
                        lambda spec, *a, **k: LinearPrototype(int(spec[-1])))


def make_folder(root, good=60, bad=("broken/truncated.jpg", "broken/not-an-image.png")):
    """``good`` random PNGs, a truncated JPEG and a text file posing as a PNG."""
    rng = np.random.default_rng(0)
    (root / "broken").mkdir(parents=True)
    (root / "ok").mkdir()
    for i in range(good):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / "ok" / f"{i:03d}.png")
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (root / bad[0]).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (root / bad[1]).write_text("this is not an image")
    return root


def folder_settings(tmp_path, folder, **overrides):
    values = {"prototypes": "efficientnet-lite0,efficientnet-lite1,efficientnet-lite2", "data": f"folder:{folder}", "num-samples": 0,
              "shared-size": 8, "target-dim": 16, "page-size": 10, "seed": 3,
              "output-dir": str(tmp_path / "out"), **overrides}
    return RunSettings.from_run_config(values)


def run_round(settings, source, monkeypatch):
    monkeypatch.setenv("COOPT_FOLDER_IMAGE_SIZE", str(SIZE))
    participants = [PrototypeParticipant(NodeSettings(spec, device="cpu", partition_id=i))
                    for i, spec in enumerate(settings.prototypes)]
    return run_in_process(settings, source, participants)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("COOPT_FOLDER_IMAGE_SIZE", str(SIZE))
    return make_folder(tmp_path / "images")


def test_bad_images_are_skipped_and_listed_not_blamed_on_nodes(tmp_path, folder, linear_prototypes, monkeypatch):
    s = folder_settings(tmp_path, folder)
    source = FolderSource(folder)
    result = run_round(s, source, monkeypatch)
    assert result.failures == []  # no participant is refused for the data's fault
    bad = result.manifest.bad_samples
    assert [b["name"] for b in bad] == ["broken/not-an-image.png", "broken/truncated.jpg"]
    assert "cannot identify image file" in bad[0]["reason"] and "truncated" in bad[1]["reason"]
    assert all("\n" not in b["reason"] for b in bad)
    ds = load_optimized_dataset(result.dataset_path, source=source)
    assert len(ds) == 60 and result.manifest.num_samples == 60 and result.manifest.missing_samples == 0
    assert not np.isin([b["id"] for b in bad], ds.sample_ids).any()
    manifest = read_manifest(result.dataset_path)
    assert manifest.bad_samples == bad and manifest.num_bad_samples == 2
    report = (result.dataset_path / "report.md").read_text()
    assert "broken/truncated.jpg" in report and "cannot be decoded" in report
    ds[0]  # the dataset's images read back


def test_the_shared_subset_is_drawn_from_images_that_decode(tmp_path, folder, linear_prototypes, monkeypatch):
    # 60 of 62 in S: any draw hits a bad image, so S must be drawn again without it.
    s = folder_settings(tmp_path, folder, **{"shared-size": 60})
    result = run_round(s, FolderSource(folder), monkeypatch)
    assert result.failures == [] and result.manifest.num_bad_samples == 2
    manifest = read_manifest(result.dataset_path)
    bad_ids = [b["id"] for b in manifest.bad_samples]
    assert len(manifest.shared_ids) == 60 and not np.isin(bad_ids, manifest.shared_ids).any()
    assert "platform" in {b["found_by"] for b in manifest.bad_samples}


def test_on_bad_sample_fail_stops_in_preflight_naming_the_file(tmp_path, folder, monkeypatch):
    s = folder_settings(tmp_path, folder, **{"on-bad-sample": "fail"})
    with pytest.raises(BadSampleError) as caught:
        preflight(s)
    message = str(caught.value)
    assert "\n" not in message and "broken/not-an-image.png" in message and "on-bad-sample=skip" in message
    assert not (tmp_path / "out" / "round-001").exists()


def test_verify_images_finds_every_bad_image_before_the_round(tmp_path, folder, linear_prototypes, monkeypatch):
    s = folder_settings(tmp_path, folder, **{"verify-images": True})
    source = preflight(s)
    assert isinstance(source, ScreenedSource) and len(source.bad_samples) == 2
    result = run_round(s, source, monkeypatch)
    assert {b["found_by"] for b in result.manifest.bad_samples} == {"verify-images"}
    assert result.manifest.num_samples == 60 and result.failures == []


def test_a_bad_node_local_image_is_listed_under_its_global_id(tmp_path, folder, linear_prototypes, monkeypatch):
    local = make_folder(tmp_path / "local", good=10)
    s = folder_settings(tmp_path, folder, **{"upload-local-images": True})
    participants = [PrototypeParticipant(NodeSettings(f"efficientnet-lite{i}", device="cpu", partition_id=i,
                                                      local_data=f"folder:{local}" if i == 2 else ""))
                    for i in range(3)]
    source = FolderSource(folder)
    result = run_in_process(s, source, participants)
    assert result.failures == []
    local_bad = [b for b in result.manifest.bad_samples if b.get("local")]
    assert sorted(b["id"] for b in local_bad) == [len(source), len(source) + 1]  # local files 0 and 1
    ds = load_optimized_dataset(result.dataset_path, source=source)
    assert len(ds) == 60 + 10
    assert ds.image(int(ds.sample_ids[-1])).shape == (SIZE, SIZE, 3)


# ------------------------------------------------------------------------ image modes


def _save(path, image, **kwargs):
    image.save(path, **kwargs)
    return path


def _white_composite(rgb, alpha):
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.rint(rgb * a + 255.0 * (1 - a)).astype(np.uint8)


def mode_cases(tmp_path):
    """(name, file, reference RGB) for every image mode Pillow opens."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    alpha = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    cases = []
    palette = Image.fromarray(rgb).quantize(colors=16)
    lut = np.array(palette.getpalette()[: 16 * 3], np.uint8).reshape(-1, 3)
    cases.append(("P", _save(tmp_path / "p.png", palette), lut[np.asarray(palette)]))
    cases.append(("L", _save(tmp_path / "l.png", Image.fromarray(gray)), np.repeat(gray[..., None], 3, -1)))
    la = Image.fromarray(np.stack([gray, alpha], -1), "LA")
    cases.append(("LA", _save(tmp_path / "la.png", la), _white_composite(np.repeat(gray[..., None], 3, -1), alpha)))
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    cases.append(("RGBA", _save(tmp_path / "rgba.png", rgba), _white_composite(rgb, alpha)))
    cmyk = rng.integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
    reference = np.rint((255 - cmyk[..., :3].astype(np.float64)) * (255 - cmyk[..., 3:].astype(np.float64)) / 255)
    cases.append(("CMYK", _save(tmp_path / "cmyk.tif", Image.fromarray(cmyk, "CMYK")), reference.astype(np.uint8)))
    deep = rng.integers(0, 65536, (SIZE, SIZE)).astype(np.uint16)
    deep_ref = np.repeat(np.rint(deep / 257.0).astype(np.uint8)[..., None], 3, -1)
    cases.append(("I;16", _save(tmp_path / "i16.png", Image.fromarray(deep)), deep_ref))
    cases.append(("I", _save(tmp_path / "i32.tif", Image.fromarray(deep.astype(np.int32), "I")), deep_ref))
    unit = rng.random((SIZE, SIZE)).astype(np.float32)
    unit_ref = np.repeat(np.rint(unit.astype(np.float64) * 255).astype(np.uint8)[..., None], 3, -1)
    cases.append(("F", _save(tmp_path / "f.tif", Image.fromarray(unit, "F")), unit_ref))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    tall = rng.integers(0, 256, (SIZE, SIZE // 2, 3), dtype=np.uint8)
    cases.append(("EXIF", _save(tmp_path / "exif.png", Image.fromarray(tall), exif=exif), np.rot90(tall, k=-1)))
    return cases


def test_every_image_mode_decodes_to_the_reference_rgb(tmp_path):
    cases = mode_cases(tmp_path)
    for name, path, reference in cases:
        with Image.open(path) as image:
            assert image.mode == name or name in ("EXIF",), (name, image.mode)
        decoded = np.asarray(open_rgb(path))
        assert decoded.dtype == np.uint8 and decoded.shape == reference.shape, name
        assert np.abs(decoded.astype(int) - reference.astype(int)).max() <= 1, name


def test_folder_source_reads_every_mode_as_rgb(tmp_path, monkeypatch):
    monkeypatch.setenv("COOPT_FOLDER_IMAGE_SIZE", str(SIZE))
    folder = tmp_path / "modes"
    folder.mkdir()
    cases = [c for c in mode_cases(folder) if c[0] != "EXIF"]  # EXIF: not square, resized
    source = FolderSource(folder)
    pixels = source.images(np.arange(len(source)))
    by_name = {source.name_of(i): pixels[i] for i in range(len(source))}
    for name, path, reference in cases:
        assert np.abs(by_name[path.name].astype(int) - reference.astype(int)).max() <= 1, name


def test_report_json_lists_bad_samples(tmp_path, folder, linear_prototypes, monkeypatch):
    result = run_round(folder_settings(tmp_path, folder), FolderSource(folder), monkeypatch)
    report = json.loads((result.dataset_path / "report.json").read_text())
    assert report["num_bad_samples"] == 2 and len(report["bad_samples"]) == 2


# ------------------------------------------------------------- entries that do not open


def test_symlink_loops_and_broken_links_are_listed_with_their_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("COOPT_FOLDER_IMAGE_SIZE", str(SIZE))
    folder = tmp_path / "links"
    (folder / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(folder / "a" / "good.png")
    (folder / "a" / "loop.png").symlink_to("loop.png")
    (folder / "a" / "broken.png").symlink_to("gone.png")
    (folder / "a" / "up").symlink_to("..")  # a folder link is not followed: no endless walk
    source = FolderSource(folder)
    assert [source.name_of(i) for i in range(len(source))] == ["a/broken.png", "a/good.png", "a/loop.png"]
    pixels, bad = source.decode(np.arange(len(source)))
    assert len(pixels) == 1
    reasons = {b.name: b.reason for b in bad}
    assert reasons == {"a/broken.png": "OSError: broken symlink (its target gone.png does not exist)",
                       "a/loop.png": "OSError: symlink loop (loop.png -> loop.png never reaches a file)"}


def test_twelve_bit_data_in_a_sixteen_bit_png_is_warned_about_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("COOPT_FOLDER_IMAGE_SIZE", str(SIZE))
    folder = tmp_path / "deep"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):  # 12-bit sensor values stored unscaled
        Image.fromarray(rng.integers(0, 4096, (SIZE, SIZE)).astype(np.uint16)).save(folder / name)
    full = rng.integers(0, 65536, (SIZE, SIZE)).astype(np.uint16)
    Image.fromarray(full).save(folder / "full.png")
    source = FolderSource(folder)
    with caplog.at_level("WARNING", logger="coopt_flower.data"):
        source.images(np.array([2]))  # full.png: the whole range, nothing to say
        assert caplog.records == []
        source.images(np.arange(len(source)))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "values of only 12 bits (e.g. a.png)" in warnings[0] and "come out dark" in warnings[0]
