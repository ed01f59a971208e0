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


def test_ratio_divides_each_sample_by_the_host_median():
    assert bench.ratio([1.0, 2.0, 3.0], [2.0, 4.0, 100.0]) == {"median": 0.5, "min": 0.25, "max": 0.75, "runs": 3}


def test_missing_samples_are_an_error_not_a_short_figure():
    import pytest

    from pipglr_builder.errors import PipglrError
    with pytest.raises(PipglrError, match="nested run true failed after 1 of 3 runs"):
        bench._ms_lines("120\nError: no such image\n", 3, "nested run true")


def test_pushed_size_counts_manifest_config_and_compressed_layers():
    manifest = {"config": {"size": 1000}, "layers": [{"size": 50_000}, {"size": 7}]}
    assert bench.pushed_size(manifest, 600) == 51_607


def test_rebuilt_layers_are_those_above_the_shared_bottom():
    before, after = ["a", "b", "c", "d"], ["a", "b", "x", "y"]
    assert bench.shared_layers(before, after) == 2
    assert bench.shared_layers(before, before) == 4
    assert bench.shared_layers([], after) == 0


def test_targets_not_measured_are_listed_as_such():
    figures = {"image_size_mb": bench.summary([300.0])}
    text = bench.table(figures, bench.evaluate(figures))
    assert "runner_bump_rebuild_seconds" in text and "not measured" in text
    assert "image_size_mb" in text and "PASS" in text
