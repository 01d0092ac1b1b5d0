"""bench.compare: ratio-to-reference changes, the significance rule, verdicts and outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench import compare, results as R
from bench.roofline import limit_samples, reference_samples

REPO = Path(__file__).resolve().parents[2]


def suite(materialise: list[float], tar_x: list[float], sha: list[float], *,
          mount: list[float] | None = None, calib: list[float] | None = None) -> R.Suite:
    """A run with one materialise cell and the roofline parts of its limit, rep by rep."""
    s = R.Suite(label="x", workloads={"deep-8": {"blob_bytes": 1 << 20, "manifest": "sha256:aa"}},
                drivers={"overlay": None})
    for rep, (m, t, h) in enumerate(zip(materialise, tar_x, sha)):
        s.add_sample("phase", "materialise", "overlay", "deep-8", None, rep, m)
        s.add_sample("roofline", "tar-x", "ext4", "deep-8", None, rep, t)
        s.add_sample("roofline", "sha256-tar", "cpu", "deep-8", None, rep, h)
    for rep, v in enumerate(mount or []):
        s.add_sample("phase", "mount", "overlay", "deep-8", None, rep, v)
    for rep, v in enumerate(calib or []):
        s.add_sample("machine", "calib", "ext4", "", None, rep, v)
    return s


def test_limit_is_the_sum_of_its_parts_per_repetition() -> None:
    s = suite([1.0, 1.0, 1.0], [0.3, 0.4, 0.5], [0.1, 0.1, 0.2])
    assert limit_samples(s, "overlay", "deep-8", "materialise") == {0: 0.4, 1: 0.5, 2: 0.7}
    assert limit_samples(s, "overlay", "deep-8", "mount") is None  # mount has no limit
    ref = reference_samples(s, "overlay", "deep-8", "materialise")
    assert ref is not None and ref[1] == "limit"


def test_slower_machine_is_not_a_regression() -> None:
    base = suite([1.0, 1.05, 0.95], [0.5, 0.52, 0.48], [0.1, 0.1, 0.1])
    # everything twice as slow (a busy machine): phase and its limit alike
    new = suite([2.0, 2.1, 1.9], [1.0, 1.04, 0.96], [0.2, 0.2, 0.2])
    c = compare.compare(base, new)
    (ch,) = c.changes
    assert ch.reference == "limit"
    assert 0.9 < ch.ratio < 1.1
    assert ch.verdict == "same" and not c.regressions


def test_real_regression_is_found() -> None:
    base = suite([1.0, 1.05, 0.95], [0.5, 0.52, 0.48], [0.1, 0.1, 0.1])
    new = suite([2.0, 2.1, 1.9], [0.5, 0.52, 0.48], [0.1, 0.1, 0.1])  # lamina alone got 2x slower
    c = compare.compare(base, new)
    (ch,) = c.changes
    assert ch.ratio > 1.8 and ch.p_slower <= 0.05
    assert ch.verdict == "regression" and c.regressions == [ch]
    assert "REGRESSION" in compare.summary_text(c)


def test_regression_within_threshold_is_only_slower() -> None:
    base = suite([1.0, 1.05, 0.95], [0.5] * 3, [0.1] * 3)
    new = suite([1.3, 1.35, 1.25], [0.5] * 3, [0.1] * 3)
    (ch,) = compare.compare(base, new, threshold=0.5).changes
    assert ch.verdict == "slower"


def test_overlapping_samples_are_not_significant() -> None:
    base = suite([1.0, 3.0, 1.1], [0.5] * 3, [0.1] * 3)
    new = suite([2.9, 1.05, 3.1], [0.5] * 3, [0.1] * 3)
    (ch,) = compare.compare(base, new).changes
    assert ch.verdict in ("same", "slower") and ch.verdict != "regression"
    assert ch.noisy


def test_improvement_and_calibration_reference_and_tiny() -> None:
    base = suite([1.0, 1.0, 1.0], [0.5] * 3, [0.1] * 3, mount=[100e-6, 110e-6, 90e-6], calib=[1.0, 1.0, 1.0])
    new = suite([0.3, 0.31, 0.29], [0.5] * 3, [0.1] * 3, mount=[400e-6, 410e-6, 390e-6], calib=[1.0, 1.0, 1.0])
    c = compare.compare(base, new)
    by = {ch.key[1]: ch for ch in c.changes}
    assert by["materialise"].verdict == "improvement"
    assert by["mount"].reference == "calib"
    assert by["mount"].verdict == "tiny"  # under the floor: shown, never a regression
    assert not c.regressions


def test_cells_only_on_one_side_are_listed() -> None:
    base = suite([1.0] * 3, [0.5] * 3, [0.1] * 3, mount=[1e-3] * 3)
    new = suite([1.0] * 3, [0.5] * 3, [0.1] * 3)
    c = compare.compare(base, new)
    assert c.only_base == ["phase / mount / overlay / deep-8"] and not c.only_new


def test_cli_compare_writes_outputs_and_exit_status(tmp_path: Path) -> None:
    base = suite([1.0, 1.05, 0.95], [0.5, 0.52, 0.48], [0.1] * 3)
    new = suite([2.0, 2.1, 1.9], [0.5, 0.52, 0.48], [0.1] * 3)
    base.save(tmp_path / "base.json")
    new.save(tmp_path / "new.json")
    out = tmp_path / "cmp"
    argv = [sys.executable, "-m", "bench", "compare", str(tmp_path / "base.json"), str(tmp_path / "new.json"),
            "--out", str(out)]
    p = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert "regression" in p.stdout
    assert (out / "compare.md").read_text().count("| **regression** |") == 1
    assert (out / "compare.png").stat().st_size > 1000
    p = subprocess.run(argv + ["--fail-on-regression"], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 1
    same = subprocess.run([sys.executable, "-m", "bench", "compare", str(tmp_path / "base.json"),
                           str(tmp_path / "base.json"), "--fail-on-regression"], capture_output=True, text=True,
                          cwd=REPO)
    assert same.returncode == 0, same.stdout
