"""The harness: what exists to test and measure the image, not to make it.

The test GitLab (gitlab_coordinator.py, run in a stand-in host by coordinator.py) and the benchmarks
(bench.py, bench_jobs.py behind `pipglr-build bench`). It imports the product (verify, build, the stand-in
host verify boots images on); no module outside it imports it but cli.py, for the `bench` command.
"""
