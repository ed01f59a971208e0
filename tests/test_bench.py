"""The benchmark's arithmetic: medians with min and max, targets checked on the median."""

from pathlib import Path

from pipglr_builder.harness import bench


def test_summary_is_median_min_max():
    assert bench.summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3}


def test_targets_pass_and_fail_on_the_median():
    figures = {"nested_run_true_ratio": bench.summary([1.1, 1.25, 9.0]), "image_size_mb": bench.summary([500.0])}
    rows = {r["figure"]: r for r in bench.evaluate(figures)}
    assert rows["nested_run_true_ratio"]["pass"] is True  # median 1.25 <= 1.3, one slow outlier
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


# --- CI jobs with the real runner (bench_jobs) ---------------------------------

TRACE = ("2026-11-24T08:00:00.100000Z 00O \x1b[0KRunning with gitlab-runner 19.4.0\n"
         "2026-11-24T08:00:01.000000Z 00O \x1b[0;m\x1b[32;1m$ echo bench-first-line\x1b[0;m\n"
         "2026-11-24T08:00:02.350000Z 01O bench-first-line\n"
         "untimed noise\n"
         "2026-11-24T08:00:05.600000Z 00O+\x1b[32;1mbench-first-line later\x1b[0;m\r\n")


def test_trace_timings_are_from_the_first_stamped_line():
    from pipglr_builder.harness import bench_jobs
    first, whole = bench_jobs.job_timings(TRACE)
    assert round(first, 6) == 2.25  # the first script line's output, not the `$ echo` line before it
    assert round(whole, 6) == 5.5
    assert bench_jobs.stamped_lines(TRACE)[-1][1] == "bench-first-line later"  # a partial line ("00O+")


def test_trace_stamps_with_nanoseconds_and_without_a_fraction():
    from pipglr_builder.harness import bench_jobs
    lines = bench_jobs.stamped_lines("2026-11-24T08:00:00Z 00O a\n2026-11-24T08:00:00.123456789Z 00O b\n")
    assert [text for _, text in lines] == ["a", "b"]
    assert (lines[1][0] - lines[0][0]).total_seconds() == 0.123456


def test_a_trace_without_timestamps_or_the_first_line_is_an_error():
    import pytest

    from pipglr_builder.errors import PipglrError
    from pipglr_builder.harness import bench_jobs
    with pytest.raises(PipglrError, match="FF_TIMESTAMPS"):
        bench_jobs.job_timings("Running with gitlab-runner\n$ echo bench-first-line\n")
    with pytest.raises(PipglrError, match="no 'bench-first-line' line"):
        bench_jobs.job_timings("2026-11-24T08:00:00Z 00O Running\n2026-11-24T08:00:01Z 00O Job failed\n")


def test_the_coordinator_script_listens_and_serves_where_the_tests_and_bench_expect():
    """gitlab_coordinator.py runs alone in a stand-in (no pipglr_builder there): its copy of the facts."""
    from pipglr_builder.harness import coordinator, gitlab_coordinator
    assert (gitlab_coordinator.PORT, gitlab_coordinator.PROJECT) == (coordinator.PORT, coordinator.PROJECT)
    assert coordinator.SCRIPT == Path(gitlab_coordinator.__file__).resolve()


def test_jobs_per_minute():
    from pipglr_builder.harness import bench_jobs
    assert bench_jobs.jobs_per_minute(4, 30.0) == 8.0
    assert bench_jobs.jobs_per_minute(1, 120.0) == 0.5


def test_nesting_and_job_targets_are_the_issues():
    targets = {name: (op, value) for name, op, value in bench.TARGETS}
    assert targets["nested_run_true_ratio"] == ("<=", 1.3) and targets["nested_files_ratio"] == ("<=", 1.3)
    for kind in ("script", "clone_cache"):
        for what in ("first_line", "job"):
            assert targets[f"job_{kind}_{what}_ratio"] == ("<=", 1.2)
    assert targets["image_size_mb"] == ("<=", 350.0) and targets["idle_memory_mib"] == ("<=", 120.0)
