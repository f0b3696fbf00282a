"""Pseudo-class tables: round trip, atomic writes, lookups, coverage checks and every corruption named."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from monai_cluster.clustering import (
    TABLE_MAGIC,
    PseudoClassTable,
    compute_pseudo_class_table,
    read_pseudo_class_table,
    write_pseudo_class_table,
)

KEYS = ["images/IMD002.png", "images/IMD003.png", "unlabeled/IMD004.jpg", "unlabeled/a,b.jpg", "images/x.png"]
LABELS = np.array([[0, 0], [0, 1], [1, 2], [1, 2], [0, 0]])


def _table() -> PseudoClassTable:
    return PseudoClassTable(list(KEYS), LABELS.copy(), (2, 4), "FeatureAutoEncoder 2D 64px, avg pool, epoch 20")


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _good_lines() -> list[str]:
    return [
        TABLE_MAGIC,
        "# num_clusters: 2,4",
        "# feature_model: fm",
        "# num_rows: 3",
        "key,level_0,level_1",
        "a.png,0,0",
        "b.png,1,2",
        "c.png,1,3",
    ]


def test_round_trip(tmp_path):
    table = _table()
    path = write_pseudo_class_table(table, tmp_path / "sub" / "pseudo_classes.csv")
    assert table.path == str(path)
    text = path.read_text(encoding="utf-8").splitlines()
    assert text[:5] == [
        TABLE_MAGIC,
        "# num_clusters: 2,4",
        "# feature_model: FeatureAutoEncoder 2D 64px, avg pool, epoch 20",
        "# num_rows: 5",
        "key,level_0,level_1",
    ]
    assert text[5] == "images/IMD002.png,0,0" and text[8] == '"unlabeled/a,b.jpg",1,2'
    back = read_pseudo_class_table(path, expected_keys=KEYS[:3])
    assert back == table and back.path == str(path)
    assert back.labels.dtype == np.int64 and back.num_levels == 2 and len(back) == 5
    np.testing.assert_array_equal(back.lookup("unlabeled/IMD004.jpg"), [1, 2])


def test_lookup_and_check_keys(tmp_path):
    table = _table()
    out = table.lookup("images/IMD003.png")
    out[0] = 99  # a copy: the table is unchanged
    np.testing.assert_array_equal(table.lookup("images/IMD003.png"), [0, 1])
    with pytest.raises(ValueError, match=r"'images/nope.png' is not in the pseudo-class table in memory \(5 rows\)"):
        table.lookup("images/nope.png")
    write_pseudo_class_table(table, tmp_path / "t.csv")
    with pytest.raises(ValueError, match=r"t\.csv \(5 rows\)"):
        table.lookup("images/nope.png")
    table.check_keys(KEYS[::-1])
    other = [f"other/{i}.png" for i in range(12)]
    listed = r"lacks 12 of the 13 dataset keys, e.g. \['other/0.png'.*'other/9.png'\]"
    with pytest.raises(ValueError, match=listed) as e:
        table.check_keys(KEYS[:1] + other)
    assert "other/10.png" not in str(e.value)
    with pytest.raises(ValueError, match="lacks 12 of the 12 dataset keys"):
        read_pseudo_class_table(tmp_path / "t.csv", expected_keys=other)


def test_atomic_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "t.csv"
    write_pseudo_class_table(_table(), path)
    before = path.read_bytes()
    real_writer = csv.writer

    class Boom(RuntimeError):
        pass

    class FailingWriter:
        """Writes the column header and two rows, then fails as a full disk would."""

        def __init__(self, handle, **kwargs):
            self.inner, self.rows = real_writer(handle, **kwargs), 0

        def writerow(self, row):
            if self.rows == 3:
                raise Boom("disk full")
            self.rows += 1
            self.inner.writerow(row)

    monkeypatch.setattr(csv, "writer", FailingWriter)
    changed = PseudoClassTable(list(KEYS), LABELS.copy(), (2, 4), "another model")
    with pytest.raises(Boom):
        write_pseudo_class_table(changed, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["t.csv"]
    with pytest.raises(Boom):
        write_pseudo_class_table(changed, tmp_path / "new.csv")
    assert sorted(os.listdir(tmp_path)) == ["t.csv"]


def test_compute_pseudo_class_table(two_scale_blobs):
    x, coarse, _ = two_scale_blobs(n=90)
    keys = [f"img_{i:03d}.png" for i in range(90)]
    table = compute_pseudo_class_table(x, keys, (3, 9), "test features", method="exact")
    assert table.num_clusters == (3, 9) and table.keys == keys
    for i in range(3):  # the coarse level recovers the three groups
        assert np.unique(table.labels[coarse == i, 0]).size == 1
    with pytest.raises(ValueError, match="90 rows"):
        compute_pseudo_class_table(x, keys[:-1], (3, 9), "f")
    with pytest.raises(ValueError, match="keys must be unique"):
        compute_pseudo_class_table(x, keys[:-1] + keys[:1], (3, 9), "f")


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"shape \(N, L\) = \(5, 2\)"):
        PseudoClassTable(KEYS, LABELS[:, :1], (2, 4), "f")
    with pytest.raises(TypeError, match="integer array"):
        PseudoClassTable(KEYS, LABELS.astype(float), (2, 4), "f")
    with pytest.raises(ValueError, match="level_1 value 4 is outside"):
        PseudoClassTable(KEYS, LABELS + np.array([0, 2]), (2, 4), "f")
    with pytest.raises(ValueError, match="row 4: key 'images/IMD002.png' is duplicated"):
        PseudoClassTable(KEYS[:4] + KEYS[:1], LABELS, (2, 4), "f")
    with pytest.raises(ValueError, match="not nested"):
        PseudoClassTable(KEYS, np.array([[0, 0], [1, 0], [1, 2], [1, 2], [0, 0]]), (2, 4), "f")
    with pytest.raises(ValueError, match="one-line"):
        PseudoClassTable(KEYS, LABELS, (2, 4), "two\nlines")
    with pytest.raises(ValueError, match="line breaks"):
        PseudoClassTable(["a\nb"] + KEYS[1:], LABELS, (2, 4), "f")
    with pytest.raises(ValueError, match="strictly increasing"):
        PseudoClassTable(KEYS, LABELS, (4, 2), "f")
    with pytest.raises(ValueError, match="at least one image key"):
        PseudoClassTable([], np.zeros((0, 2), dtype=np.int64), (2, 4), "f")
    with pytest.raises(TypeError, match="PseudoClassTable"):
        write_pseudo_class_table({"keys": KEYS}, "x.csv")


def _corrupt(index: int, line: str | None) -> list[str]:
    lines = _good_lines()
    if line is None:
        del lines[index]
    else:
        lines[index] = line
    return lines


@pytest.mark.parametrize(
    "lines, message",
    [
        (_corrupt(0, "# some other table"), r"line 1: expected '# monai_cluster pseudo-class table v1'"),
        (_corrupt(1, "# num_clusters: 4,2"), r"line 2: bad num_clusters '4,2'.*strictly increasing"),
        (_corrupt(1, "# num_clusters: 2,x"), r"line 2: bad num_clusters '2,x'"),
        (_corrupt(1, "# levels: 2,4"), r"line 2: expected a header line starting with '# num_clusters:'"),
        (_corrupt(2, None), r"line 3: expected a header line starting with '# feature_model:'"),
        (_corrupt(3, "# num_rows: three"), r"line 4: num_rows must be a non-negative integer, got 'three'"),
        (_corrupt(3, "# num_rows: 0"), r"line 4: num_rows is 0"),
        (_corrupt(3, "# num_rows: 4"), r"line 4: the header says num_rows: 4 but the file holds 3 row\(s\)"),
        (_corrupt(7, None), r"line 4: the header says num_rows: 3 but the file holds 2 row\(s\)"),
        (_corrupt(4, "key,level_0"), r"line 5: expected the column header key,level_0,level_1 for 2 level\(s\)"),
        (_corrupt(6, "b.png,1"), r"line 7: expected a key and 2 level value\(s\), got 2 field\(s\)"),
        (_corrupt(6, "b.png,1,2,0"), r"line 7: expected a key and 2 level value\(s\), got 4 field\(s\)"),
        (_corrupt(6, "b.png,1,two"), r"line 7: level_1 value 'two' is not an integer"),
        (_corrupt(7, "c.png,1,4"), r"line 8: level_1 value 4 is outside \[0, 4\)"),
        (_corrupt(7, "c.png,-1,3"), r"line 8: level_0 value -1 is outside \[0, 2\)"),
        (_corrupt(7, "a.png,1,3"), r"line 8: key 'a.png' is duplicated"),
        (_corrupt(7, "c.png,0,2"), r"line 8: rows are not nested: level_1 cluster 2 lies in level_0 cluster 0"),
        (_corrupt(6, ""), r"line 7: expected a key and 2 level value\(s\), got 0 field\(s\)"),
    ],
)
def test_every_corruption_is_named(tmp_path, lines, message):
    path = _write(tmp_path, lines)
    with pytest.raises(ValueError, match=r"bad\.csv, " + message):
        read_pseudo_class_table(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_pseudo_class_table(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty.csv, line 1: .*an empty file"):
        read_pseudo_class_table(tmp_path / "empty.csv")
    path = _write(tmp_path, _good_lines() + ["", ""])  # trailing blank lines are tolerated
    assert len(read_pseudo_class_table(path)) == 3
