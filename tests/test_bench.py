"""The benchmark's arithmetic: medians with min and max, paired samples in alternating order and their ratios,
targets checked on the median."""

from pathlib import Path

import pytest

from pipglr_builder.errors import PipglrError
from pipglr_builder.harness import bench, bench_stats


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


def test_pairs_alternate_which_side_goes_first():
    assert bench_stats.pair_orders(4, ("alice", "nested")) == [
        ("alice", "nested"), ("nested", "alice"), ("alice", "nested"), ("nested", "alice")]
    assert bench_stats.pair_orders(0, ("a", "b")) == []


def test_alternate_takes_the_samples_pair_by_pair_in_that_order():
    calls, pairs_started = [], []
    samples = bench_stats.alternate(3, ("a", "b"), lambda side: calls.append(side) or float(len(calls)),
                                    before=pairs_started.append)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert pairs_started == [0, 1, 2]
    assert samples == {"a": [1.0, 4.0, 5.0], "b": [2.0, 3.0, 6.0]}  # sample i of each side is from pair i


def test_drift_during_the_run_cancels_out_in_alternated_pairs():
    """Two equal sides on a machine that gets slower with every sample (writeback, load): run in two blocks,
    the second side looks 1.5 times slower; alternated pair by pair, the median per-pair ratio is 1.0."""
    def drifting():
        clock = iter(range(1, 1000))
        return lambda side: 1.0 + 0.1 * next(clock)
    sample = drifting()
    blocks = {side: [sample(side) for _ in range(10)] for side in ("a", "b")}
    assert bench_stats.paired_ratio(blocks["b"], blocks["a"])["median"] > 1.5
    paired = bench_stats.alternate(10, ("a", "b"), drifting())
    ratio = bench_stats.paired_ratio(paired["b"], paired["a"])
    assert abs(ratio["median"] - 1.0) < 0.01 and ratio["pairs"] == 10
    assert 0.9 < ratio["min"] and ratio["max"] < 1.1


def test_paired_ratio_is_the_median_of_per_pair_ratios_with_quartiles():
    ratio = bench_stats.paired_ratio([2.0, 3.0, 9.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    # per pair: 2.0, 1.5, 3.0, 1.0, 1.0
    assert ratio == {"median": 1.5, "min": 1.0, "max": 3.0, "runs": 5, "q1": 1.0, "q3": 2.0, "pairs": 5,
                     "per_pair": [2.0, 1.5, 3.0, 1.0, 1.0]}
    assert bench_stats.paired_ratio([3.0], [2.0]) == {"median": 1.5, "min": 1.5, "max": 1.5, "runs": 1,
                                                       "q1": 1.5, "q3": 1.5, "pairs": 1, "per_pair": [1.5]}


def test_paired_ratio_refuses_unpaired_or_zero_samples():
    with pytest.raises(PipglrError, match="as many samples on each side, not 2 and 3"):
        bench_stats.paired_ratio([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(PipglrError, match="as many samples"):
        bench_stats.paired_ratio([], [])
    with pytest.raises(PipglrError, match="must be positive"):
        bench_stats.paired_ratio([1.0], [0.0])


def test_the_table_shows_the_quartiles_of_a_paired_ratio():
    figures = {"nested_files_ratio": bench_stats.paired_ratio([1.0, 1.2, 1.1], [1.0, 1.0, 1.0])}
    text = bench.table(figures, bench.evaluate(figures))
    assert "1.05..1.15" in text and "PASS" in text


def test_a_sample_starts_from_synced_and_dropped_caches(monkeypatch, tmp_path):
    events = []
    drop = tmp_path / "drop_caches"
    monkeypatch.setattr(bench, "DROP_CACHES", drop)
    monkeypatch.setattr(bench.os, "sync", lambda: events.append("sync"))
    side = bench.Side("alice", lambda script: events.append(script) or "1234\n", "podman run --rm")
    assert side.sample("cpu", "JOB") == 1.234
    assert events[0] == "sync" and events[1].startswith("podman run --rm JOB sh -c ")
    assert drop.read_text() == "3\n"


def test_the_works_scripts():
    true = bench.work_script("run_true", "podman run --rm", "JOB")
    assert true.count("podman run --rm JOB true") == 2 and true.index("s=$(date") > true.index("JOB true")  # warm-up
    files = bench.work_script("files", "podman run --rm", "JOB")
    # The tree is made on tmpfs: nothing is unpacked and deleted on the disk before the timed untar.
    made, timed = files.index("/dev/shm/b/d/f$i"), files.index("s=$(date")
    assert made < timed and "rm -rf d" not in files[:timed] and files.index("sync") < timed
    assert "sha256sum" in bench.work_script("cpu", "podman run --rm", "JOB")


def test_the_bench_refuses_to_run_when_it_cannot_drop_caches(monkeypatch, tmp_path):
    readonly = tmp_path / "drop_caches"
    readonly.write_text("")
    readonly.chmod(0o444)
    monkeypatch.setattr(bench, "DROP_CACHES", readonly)
    monkeypatch.setattr(bench.os, "access", lambda path, mode: False)
    with pytest.raises(PipglrError, match="run it as root"):
        bench.run(None, 1, tmp_path / "out")  # refused before the configuration is looked at
    assert not (tmp_path / "out").exists()


def test_missing_samples_are_an_error_not_a_short_figure():
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


def test_throughput_is_timed_from_the_first_job_handed_out_not_from_queueing():
    """Jobs queued at once: from the first job's first line to the last line of any; the runner's poll before
    the first job (queued at 07:59:57 here) is not in it."""
    from pipglr_builder.harness import bench_jobs
    traces = ["2026-11-24T08:00:01.000000Z 00O Running with gitlab-runner\n2026-11-24T08:00:04.000000Z 00O Job succeeded\n",
              "2026-11-24T08:00:00.500000Z 00O Running with gitlab-runner\n2026-11-24T08:00:03.000000Z 00O Job succeeded\n",
              "2026-11-24T08:00:01.200000Z 00O Running\n2026-11-24T08:00:05.500000Z 00O Job succeeded\n"]
    assert bench_jobs.throughput_window(traces) == 5.0
    assert bench_jobs.jobs_per_minute(3, bench_jobs.throughput_window(traces)) == 36.0
    with pytest.raises(PipglrError, match="FF_TIMESTAMPS"):
        bench_jobs.throughput_window([traces[0], "Running with gitlab-runner\n"])


def test_both_runners_poll_alike_and_run_four_jobs_at_once():
    from pipglr_builder.harness import bench_jobs
    assert bench_jobs.GLOBAL_CONFIG == "concurrent = 4\ncheck_interval = 1\n"


def test_nesting_and_job_targets_are_the_issues():
    targets = {name: (op, value) for name, op, value in bench.TARGETS}
    assert targets["nested_run_true_ratio"] == ("<=", 1.3) and targets["nested_files_ratio"] == ("<=", 1.3)
    for kind in ("script", "clone_cache"):
        for what in ("first_line", "job"):
            assert targets[f"job_{kind}_{what}_ratio"] == ("<=", 1.2)
    assert targets["image_size_mb"] == ("<=", 350.0) and targets["idle_memory_mib"] == ("<=", 120.0)


def test_the_stand_ins_home_is_a_journaled_ext4_made_and_removed_by_the_bench(monkeypatch):
    """This VM's disk is ext4 without a journal (recently deleted inodes scanned on every new file): the bench
    gives each stand-in a /home of its own, an ext4 with a journal in a loop-mounted image file."""
    import subprocess

    from pipglr_builder import processes
    from pipglr_builder.harness import bench_jobs
    from pipglr_builder.standin import StandIn
    calls = []

    class Started(Exception):
        pass

    def execute(argv, **kwargs):
        calls.append(argv)
        if argv[:3] == ["podman", "run", "--detach"]:
            raise Started  # the stand-in itself: far enough
        return subprocess.CompletedProcess(argv, 0, "", "")
    monkeypatch.setattr(processes, "execute", execute)
    with bench_jobs.journaled_home() as image:
        standin = StandIn("localhost/base:x", name="bench-standin", home_fs=image)
        with pytest.raises(Started):
            standin.start()
        standin.close()  # its api directory (podman itself is faked)
    assert calls[0] == ["truncate", "--size", bench_jobs.HOME_FS_SIZE, str(image)]
    assert calls[1][0] == "mkfs.ext4" and "lazy_itable_init=0,lazy_journal_init=0" in calls[1] and "-O" not in calls[1]
    assert ["podman", "volume", "create", "--opt", f"device={image}", "--opt", "type=ext4", "--opt", "o=loop",
            "bench-standin-home"] in calls
    copy = next(argv for argv in calls if argv[:3] == ["podman", "run", "--rm"])
    assert copy[-3:] == ["-a", "/home/.", "/mnt/"] and "bench-standin-home:/mnt" in copy
    assert "bench-standin-home:/home" in next(argv for argv in calls if argv[:3] == ["podman", "run", "--detach"])
    assert not image.parent.exists()  # removed after
    calls.clear()
    plain = StandIn("localhost/base:x", name="test-standin")
    with pytest.raises(Started):
        plain.start()
    plain.close()
    assert not any(argv[:3] == ["podman", "volume", "create"] for argv in calls)  # the tests' stand-ins: as before
