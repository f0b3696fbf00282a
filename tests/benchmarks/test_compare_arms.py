"""benchmarks/compare_arms.py: pairing two variants of different configurations by seed, with synthetic records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import compare_arms  # noqa: E402

SEEDS = list(range(5))


def _run(seed: int, dice: float, variant: str = "cluster_guided@3000", patients=None) -> dict:
    return {"seed": seed, "dice": dice, "variant": variant, "num_labeled": 2,
            "dice_per_class": {"RV": dice - 0.1, "LV": dice + 0.1},
            "labeled_patients": patients or [f"patient{seed:03d}", f"patient{seed + 50:03d}"],
            "test_patients": ["patient002", "patient008"]}  # fmt: skip


def _record(path: Path, runs: list[dict], **config) -> Path:
    path.write_text(json.dumps({"config": {"image_size": 64, "mask_level": 0, **config}, "runs": runs}))
    return path


def test_pairs_by_seed_and_reads_the_interval(tmp_path):
    ref = _record(tmp_path / "ref.json", [_run(s, 0.50 + 0.01 * s) for s in SEEDS])
    arm = _record(tmp_path / "arm.json", [_run(s, 0.55 + 0.01 * s + (0.005 if s % 2 else -0.005)) for s in SEEDS],
                  mask_level=1)
    out = compare_arms.main(["--reference", str(ref), "--reference-variant", "cluster_guided@3000", "--arm", str(arm),
                             "--arm-variant", "cluster_guided@3000", "--seeds", *map(str, SEEDS),
                             "--out", str(tmp_path / "cmp.json")])
    assert [p["seed"] for p in out["pairs"]] == SEEDS
    assert out["dice"]["mean"] == pytest.approx(0.05 + (2 * 0.005 - 3 * 0.005) / 5)
    assert out["dice"]["ci95"][0] > 0 and out["decision"] == "arm higher"
    assert out["per_class"]["RV"]["mean"] == pytest.approx(out["dice"]["mean"])
    assert out["config_differences"] == {"mask_level": [0, 1]}
    assert json.loads((tmp_path / "cmp.json").read_text())["decision"] == "arm higher"


def test_decision_waits_for_every_preregistered_seed_and_says_which_are_missing(tmp_path):
    reference = {s: _run(s, 0.5) for s in SEEDS}
    arm = {s: _run(s, 0.6 + 0.001 * s) for s in SEEDS[:3]}
    result = compare_arms.compare(reference, arm, SEEDS)
    assert result["decision"] == "incomplete" and result["missing"] == [3, 4]
    assert result["dice"]["n"] == 3
    assert "no pair yet for seeds [3, 4]" in compare_arms.format_comparison(result, {}, "a", "b")


def test_lower_and_undecided_arms(tmp_path):
    reference = {s: _run(s, 0.5) for s in SEEDS}
    lower = compare_arms.compare(reference, {s: _run(s, 0.4 + 0.002 * s) for s in SEEDS}, SEEDS)
    assert lower["decision"] == "reference higher" and lower["dice"]["ci95"][1] < 0
    mixed = compare_arms.compare(reference, {s: _run(s, 0.5 + (0.05 if s % 2 else -0.05)) for s in SEEDS}, SEEDS)
    assert mixed["decision"] == "not told apart" and mixed["dice"]["ci95"][0] < 0 < mixed["dice"]["ci95"][1]


def test_a_pair_on_other_labeled_patients_is_refused_naming_the_seed():
    reference = {s: _run(s, 0.5) for s in SEEDS}
    arm = {s: _run(s, 0.6) for s in SEEDS}
    arm[3] = _run(3, 0.6, patients=["patient001", "patient002"])
    with pytest.raises(ValueError, match=r"seed 3: labeled_patients differ"):
        compare_arms.compare(reference, arm, SEEDS)


def test_files_of_one_side_must_share_a_configuration_and_hold_the_variant(tmp_path):
    a = _record(tmp_path / "a.json", [_run(0, 0.5)])
    b = _record(tmp_path / "b.json", [_run(1, 0.5)], image_size=128)
    with pytest.raises(ValueError, match=r"b.json: its configuration differs .* \['image_size'\]"):
        compare_arms.load_runs([a, b], "cluster_guided@3000", 2)
    with pytest.raises(ValueError, match=r"no run of variant 'random\+copy_paste' at 2 labeled .*cluster_guided@3000 at 2"):
        compare_arms.load_runs([a], "random+copy_paste", 2)
    config, runs = compare_arms.load_runs([a], "cluster_guided@3000", 2)
    assert config["image_size"] == 64 and list(runs) == [0]
