import json
from pathlib import Path

import pytest

import monai_cluster.data.synthetic as synthetic
from monai_cluster.data import SYNTHETIC_MARKER, make_synthetic_dermoscopy, prepare_dataset


def _forbid_generation(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("generated again although the folder was up to date")

    monkeypatch.setattr(synthetic, "make_synthetic_dermoscopy", fail)
    monkeypatch.setattr(synthetic, "make_synthetic_heart", fail)


def test_dermoscopy_generated_once(tmp_path, monkeypatch):
    items = prepare_dataset(synthetic_dir=tmp_path, kind="dermoscopy", n=5, size=32, seed=2)
    assert len(items) == 5 and all(set(it) == {"image", "label", "key", "diagnosis"} for it in items)
    assert json.loads((tmp_path / SYNTHETIC_MARKER).read_text()) == {
        "kind": "dermoscopy", "n": 5, "size": [32, 32], "seed": 2, "generator_version": 1
    }
    # the listing is what the generator returns for the same folder
    assert items == make_synthetic_dermoscopy(tmp_path, n=5, size=32, seed=2)
    _forbid_generation(monkeypatch)
    assert prepare_dataset(synthetic_dir=tmp_path, kind="dermoscopy", n=5, size=(32, 32), seed=2) == items


def test_regenerates_when_settings_differ_and_removes_stale_files(tmp_path):
    prepare_dataset(synthetic_dir=tmp_path, n=6, size=24)
    (tmp_path / "images" / "notes.txt").write_text("user file, not generated")
    items = prepare_dataset(synthetic_dir=tmp_path, n=3, size=24)
    assert [it["key"] for it in items] == [f"images/SYN{i:04d}.png" for i in range(3)]
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [f"SYN{i:04d}_lesion.png" for i in range(3)]
    assert (tmp_path / "images" / "notes.txt").exists()  # only generated names are removed
    assert json.loads((tmp_path / SYNTHETIC_MARKER).read_text())["n"] == 3


@pytest.mark.parametrize("damage", ["no_marker", "bad_marker", "missing_mask"])
def test_regenerates_after_damage(tmp_path, damage):
    first = prepare_dataset(synthetic_dir=tmp_path, n=3, size=24, seed=1)
    before = Path(first[0]["image"]).read_bytes()
    if damage == "no_marker":
        (tmp_path / SYNTHETIC_MARKER).unlink()
    elif damage == "bad_marker":
        (tmp_path / SYNTHETIC_MARKER).write_text("{not json")
    else:
        Path(first[1]["label"]).unlink()
    assert prepare_dataset(synthetic_dir=tmp_path, n=3, size=24, seed=1) == first
    assert Path(first[0]["image"]).read_bytes() == before and Path(first[1]["label"]).exists()


def test_heart(tmp_path, monkeypatch):
    items = prepare_dataset(synthetic_dir=tmp_path, kind="heart", n=2, size=16, seed=0)
    assert [it["key"] for it in items] == ["images/heart_000.nii.gz", "images/heart_001.nii.gz"]
    assert all(set(it) == {"image", "label", "key"} for it in items)
    _forbid_generation(monkeypatch)
    assert prepare_dataset(synthetic_dir=tmp_path, kind="heart", n=2, size=16, seed=0) == items


def test_switching_kind_in_one_folder(tmp_path):
    prepare_dataset(synthetic_dir=tmp_path, kind="dermoscopy", n=2, size=16)
    items = prepare_dataset(synthetic_dir=tmp_path, kind="heart", n=1, size=16)
    assert [it["key"] for it in items] == ["images/heart_000.nii.gz"]
    assert not (tmp_path / "diagnosis.csv").exists() and not list((tmp_path / "masks").iterdir())


def test_dataset_dir_is_listed_with_diagnosis(derm_set, tmp_path, caplog):
    folder, generated = derm_set
    assert prepare_dataset(dataset_dir=folder) == generated
    assert prepare_dataset(dataset_dir=str(folder), synthetic_dir=tmp_path, layout="ph2") == generated
    assert not list(tmp_path.iterdir())  # nothing generated when a dataset is given
    # a diagnosis table that misses an image is not attached
    partial = tmp_path / "partial"
    items = make_synthetic_dermoscopy(partial, n=2, size=16)
    (partial / "diagnosis.csv").write_text(f"image_name,diagnosis\nSYN0000,{items[0]['diagnosis']}\n")
    assert prepare_dataset(dataset_dir=partial) == [{k: it[k] for k in ("image", "label", "key")} for it in items]
    assert "no diagnosis for 1 image(s)" in caplog.text


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        prepare_dataset(synthetic_dir=tmp_path, kind="retina")
    with pytest.raises(ValueError, match="synthetic_dir must name a folder"):
        prepare_dataset()
    with pytest.raises(ValueError, match="synthetic_dir must name a folder"):
        prepare_dataset(dataset_dir="", synthetic_dir="")
    with pytest.raises(ValueError, match="size must be an int or a sequence of 3"):
        prepare_dataset(synthetic_dir=tmp_path, kind="heart", size=(16, 16))
    with pytest.raises(ValueError, match="does not exist"):
        prepare_dataset(dataset_dir=tmp_path / "missing")


@pytest.mark.real_data
def test_real_ph2_gets_diagnoses(real_data):
    items = prepare_dataset(dataset_dir=real_data("dermoscopy", "ph2"))
    assert len(items) == 45
    assert {it["diagnosis"] for it in items} <= {"Common Nevus", "Atypical Nevus", "Melanoma"}
