"""Pseudo-class tables: one row of nested cluster labels per training image, keyed by its relative path.

The file is a CSV written atomically (contract 4 of ``docs/ARCHITECTURE.md``)::

    # monai_cluster pseudo-class table v1
    # num_clusters: 8,64
    # feature_model: <text>
    # num_rows: 200
    key,level_0,level_1
    images/IMD002.png,3,17
    ...

Reading checks the header, the number of rows and levels, the value range of every level, unique keys and
the nesting of the levels, and names the file and line of the first problem.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monai_cluster.clustering._checks import check_num_clusters
from monai_cluster.clustering.hierarchy import EXACT_MAX_SAMPLES, hierarchical_pseudo_classes
from monai_cluster.utils.io import atomic_write

__all__ = [
    "PseudoClassTable",
    "write_pseudo_class_table",
    "read_pseudo_class_table",
    "compute_pseudo_class_table",
    "TABLE_MAGIC",
]

TABLE_MAGIC = "# monai_cluster pseudo-class table v1"
_NUM_HEADER_LINES = 5  # four comment lines and the column header
_MAX_LISTED = 10


def _check_keys(keys: object) -> list[str]:
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence):
        raise TypeError(f"keys must be a list of str, got {type(keys).__name__}.")
    out = list(keys)
    for i, key in enumerate(out):
        if not isinstance(key, str) or not key:
            raise TypeError(f"keys must be non-empty str, got {key!r} at position {i}.")
        if "\n" in key or "\r" in key:
            raise ValueError(f"keys must not contain line breaks, got {key!r} at position {i}.")
    return out


def _first_problem(keys: list[str], labels: np.ndarray, num_clusters: tuple[int, ...]) -> tuple[int, str] | None:
    """The first (row, message) that breaks the table's rules (value range, unique keys, nesting), or None."""
    for level, k in enumerate(num_clusters):
        bad = np.flatnonzero((labels[:, level] < 0) | (labels[:, level] >= k))
        if bad.size:
            row = int(bad[0])
            return row, f"level_{level} value {labels[row, level]} is outside [0, {k}) (num_clusters={k})"
    seen: dict[str, int] = {}
    for row, key in enumerate(keys):
        if key in seen:
            return row, f"key {key!r} is duplicated (first in row {seen[key]})"
        seen[key] = row
    for level in range(1, labels.shape[1]):
        fine, coarse = labels[:, level], labels[:, level - 1]
        _, first, inverse = np.unique(fine, return_index=True, return_inverse=True)
        bad = np.flatnonzero(coarse[first][inverse.ravel()] != coarse)
        if bad.size:
            row = int(bad[0])
            return row, (
                f"rows are not nested: level_{level} cluster {fine[row]} lies in level_{level - 1} cluster "
                f"{coarse[row]} here but in {coarse[first][inverse.ravel()][row]} at row {first[inverse.ravel()][row]}"
            )
    return None


@dataclass(eq=False)
class PseudoClassTable:
    """Nested pseudo-class labels of a set of images.

    Args:
        keys: ``N`` unique image keys (paths relative to the dataset root, POSIX separators).
        labels: int64 ``(N, L)``, coarse to fine; level ``l`` in ``[0, num_clusters[l])``, nested.
        num_clusters: ``L`` strictly increasing cluster counts.
        feature_model: a description of the features the clusters came from (one line).
        path: the file the table was read from or written to, used in messages.

    Raises:
        ValueError/TypeError: when the pieces disagree or break the rules above.
    """

    keys: list[str]
    labels: np.ndarray
    num_clusters: tuple[int, ...]
    feature_model: str
    path: str | None = None
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.keys = _check_keys(self.keys)
        self.num_clusters = check_num_clusters(self.num_clusters)
        if not isinstance(self.feature_model, str) or "\n" in self.feature_model or "\r" in self.feature_model:
            raise ValueError(f"feature_model must be a one-line str, got {self.feature_model!r}.")
        labels = np.asarray(self.labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}.")
        expected = (len(self.keys), len(self.num_clusters))
        if labels.shape != expected:
            raise ValueError(f"labels must have shape (N, L) = {expected} for {expected[0]} keys, got {labels.shape}.")
        if not self.keys:
            raise ValueError("keys must hold at least one image key, got an empty list.")
        self.labels = labels.astype(np.int64)
        problem = _first_problem(self.keys, self.labels, self.num_clusters)
        if problem is not None:
            raise ValueError(f"pseudo-class table row {problem[0]}: {problem[1]}.")
        self._index = {key: row for row, key in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PseudoClassTable):
            return NotImplemented
        return (
            self.keys == other.keys
            and np.array_equal(self.labels, other.labels)
            and self.num_clusters == other.num_clusters
            and self.feature_model == other.feature_model
        )

    @property
    def num_levels(self) -> int:
        """Number of hierarchy levels ``L``."""
        return len(self.num_clusters)

    def _where(self) -> str:
        source = f"from {self.path}" if self.path else "in memory"
        return f"pseudo-class table {source} ({len(self)} rows)"

    def lookup(self, key: str) -> np.ndarray:
        """Pseudo-classes of one image.

        Returns:
            int64 ``(L,)``, coarse to fine (a copy).

        Raises:
            ValueError: when the table has no row for ``key``.
        """
        row = self._index.get(key)
        if row is None:
            raise ValueError(f"key {key!r} is not in the {self._where()}; was the table computed on another dataset?")
        return self.labels[row].copy()

    def check_keys(self, keys: Iterable[str]) -> None:
        """Check that the table has a row for every key of a dataset.

        Raises:
            ValueError: naming the first 10 missing keys and how many are missing.
        """
        keys = list(keys)
        missing = [key for key in keys if key not in self._index]
        if missing:
            raise ValueError(
                f"the {self._where()} lacks {len(missing)} of the {len(keys)} dataset keys, e.g. "
                f"{missing[:_MAX_LISTED]}; was it computed on another dataset?"
            )


def write_pseudo_class_table(table: PseudoClassTable, path: str | os.PathLike) -> Path:
    """Write ``table`` to ``path`` atomically (a failure leaves the previous file untouched).

    Returns:
        the path written; ``table.path`` is set to it.
    """
    if not isinstance(table, PseudoClassTable):
        raise TypeError(f"table must be a PseudoClassTable, got {type(table).__name__}.")
    dest = Path(path)
    with atomic_write(dest, "w", newline="") as handle:
        handle.write(f"{TABLE_MAGIC}\n")
        handle.write(f"# num_clusters: {','.join(str(k) for k in table.num_clusters)}\n")
        handle.write(f"# feature_model: {table.feature_model}\n")
        handle.write(f"# num_rows: {len(table)}\n")
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["key"] + [f"level_{level}" for level in range(table.num_levels)])
        for key, row in zip(table.keys, table.labels.tolist()):
            writer.writerow([key, *row])
    table.path = str(dest)
    return dest


def _header_value(lines: list[str], index: int, prefix: str, where: str) -> str:
    if index >= len(lines) or not lines[index].startswith(prefix):
        got = repr(lines[index]) if index < len(lines) else "end of file"
        raise ValueError(f"{where}, line {index + 1}: expected a header line starting with {prefix!r}, got {got}.")
    return lines[index][len(prefix) :].strip()


def read_pseudo_class_table(path: str | os.PathLike, expected_keys: Iterable[str] | None = None) -> PseudoClassTable:
    """Read and validate a pseudo-class table written by :func:`write_pseudo_class_table`.

    Args:
        path: the CSV file.
        expected_keys: keys of the dataset the table must cover (e.g. ``[d["key"] for d in data]``); a table
            from another dataset fails here instead of at the first missing image.

    Raises:
        ValueError: naming the file and the line of the first problem: bad header, wrong number of levels or
            rows, a non-integer or out-of-range value, a duplicated key, rows that are not nested, missing keys.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ValueError(f"pseudo-class table {where} does not exist (or is not a file).")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{where}: not a UTF-8 text file ({err}); not a pseudo-class table.") from None
    # split on the "\n" the writer uses only: str.splitlines would also split keys holding \x1c-\x1e, \x85 or \u2028
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")] if text else []
    if not lines or lines[0].strip() != TABLE_MAGIC:
        got = repr(lines[0]) if lines else "an empty file"
        raise ValueError(f"{where}, line 1: expected {TABLE_MAGIC!r}, got {got}; not a pseudo-class table.")
    text = _header_value(lines, 1, "# num_clusters:", where)
    try:
        num_clusters = check_num_clusters(tuple(int(v) for v in text.split(",")))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}, line 2: bad num_clusters {text!r}: {err}") from err
    feature_model = _header_value(lines, 2, "# feature_model:", where)
    text = _header_value(lines, 3, "# num_rows:", where)
    if not text.isdigit():
        raise ValueError(f"{where}, line 4: num_rows must be a non-negative integer, got {text!r}.")
    num_rows = int(text)
    if num_rows == 0:
        raise ValueError(f"{where}, line 4: num_rows is 0; a pseudo-class table needs at least one row.")
    levels = len(num_clusters)
    expected_header = ["key"] + [f"level_{level}" for level in range(levels)]
    header = next(csv.reader(lines[4:5]), None)
    if header != expected_header:
        raise ValueError(
            f"{where}, line 5: expected the column header {','.join(expected_header)} for {levels} level(s) "
            f"(num_clusters={','.join(map(str, num_clusters))}), got {lines[4] if len(lines) > 4 else 'end of file'!r}."
        )
    body = lines[_NUM_HEADER_LINES:]
    while body and not body[-1].strip():  # tolerate trailing blank lines only
        body.pop()
    if len(body) != num_rows:
        raise ValueError(
            f"{where}, line 4: the header says num_rows: {num_rows} but the file holds {len(body)} row(s) "
            "(truncated or edited?)."
        )
    keys: list[str] = []
    labels = np.empty((num_rows, levels), dtype=np.int64)
    for row, record in enumerate(csv.reader(body)):
        line = row + _NUM_HEADER_LINES + 1
        if len(record) != levels + 1:
            raise ValueError(
                f"{where}, line {line}: expected a key and {levels} level value(s), got {len(record)} field(s)."
            )
        keys.append(record[0])
        for level, value in enumerate(record[1:]):
            try:
                labels[row, level] = int(value)
            except ValueError:
                raise ValueError(f"{where}, line {line}: level_{level} value {value!r} is not an integer.") from None
    try:
        keys = _check_keys(keys)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}: {err}") from err
    problem = _first_problem(keys, labels, num_clusters)
    if problem is not None:
        raise ValueError(f"{where}, line {problem[0] + _NUM_HEADER_LINES + 1}: {problem[1]}.")
    table = PseudoClassTable(keys, labels, num_clusters, feature_model, path=where)
    if expected_keys is not None:
        table.check_keys(expected_keys)
    return table


def compute_pseudo_class_table(
    features: np.ndarray,
    keys: Sequence[str],
    num_clusters: tuple[int, ...],
    feature_model: str,
    method: str = "auto",
    seed: int = 0,
    exact_max_samples: int = EXACT_MAX_SAMPLES,
) -> PseudoClassTable:
    """Cluster ``features`` hierarchically (:func:`hierarchical_pseudo_classes`) into a table keyed by ``keys``.

    Args:
        features: ``(N, F)`` features, row ``i`` belonging to ``keys[i]`` (as returned by ``extract_features``).
        keys: ``N`` unique image keys.
        num_clusters: strictly increasing cluster counts, coarse to fine.
        feature_model: one-line description of the feature model, stored in the table header.
        method: ``"auto"``, ``"exact"`` or ``"scalable"``.
        seed: seed of the scalable method's k-means.
        exact_max_samples: the ``"auto"`` switch point.
    """
    keys = _check_keys(keys)
    n = np.shape(features)[0] if np.ndim(features) else 0
    if len(keys) != n:
        raise ValueError(f"keys must have one entry per row of features: got {len(keys)} keys for {n} rows.")
    if len(set(keys)) != len(keys):
        raise ValueError("keys must be unique; the dataset lists some images more than once.")
    labels = hierarchical_pseudo_classes(
        features, num_clusters, method=method, exact_max_samples=exact_max_samples, seed=seed
    )
    return PseudoClassTable(keys, labels, tuple(num_clusters), feature_model)
