"""The benchmark's arithmetic: medians with min and max, targets checked on the median."""

from pipglr_builder import bench


def test_summary_is_median_min_max():
    assert bench.summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3}


def test_targets_pass_and_fail_on_the_median():
    figures = {"nested_run_true_ratio": bench.summary([1.2, 1.4, 9.0]), "image_size_mb": bench.summary([500.0])}
    rows = {r["figure"]: r for r in bench.evaluate(figures)}
    assert rows["nested_run_true_ratio"]["pass"] is True  # median 1.4 <= 1.5, one slow outlier
    assert rows["image_size_mb"]["pass"] is False
    assert rows["idle_memory_mib"]["value"] is None and rows["idle_memory_mib"]["pass"] is None
    text = bench.table(figures, list(rows.values()))
    assert "PASS" in text and "FAIL" in text


def test_millisecond_lines_are_parsed():
    assert bench._ms_lines("250\n1200\nnoise\n") == [0.25, 1.2]
