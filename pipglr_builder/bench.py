"""bench: what users pay for the image, measured on this machine, with targets.

Each figure is the median of several runs with min and max. Figures so far:
image size and layers, a warm rebuild with no change, `podman run --rm IMG
true` nested through the socket against the same at host level, file-heavy
work nested against host level, and the idle memory of the outer container.
The full profile runs on the stand-in user host, as verify does.
"""

from __future__ import annotations

import datetime
import json
import statistics
import time
from pathlib import Path

from . import build, hosts, tools, verify
from .config import Config

# (figure, comparison, target): checked by the benchmark, reported as pass/fail.
TARGETS = (
    ("nested_run_true_ratio", "<=", 1.5),
    ("nested_files_ratio", "<=", 1.3),
    ("warm_rebuild_seconds", "<=", 10.0),
    ("idle_memory_mib", "<=", 150.0),
    ("image_size_mb", "<=", 450.0),
)

# Times N runs of a command inside a shell; prints one duration (ms) per line.
LOOP = 'for i in $(seq 1 {n}); do s=$(date +%s%N); {cmd} >/dev/null 2>&1 || exit 1; e=$(date +%s%N); ' \
       'echo $(( (e - s) / 1000000 )); done'
# Many small files: write a tree, pack it, then time unpacking and deleting it.
FILES = ('mkdir -p /tmp/b && cd /tmp/b && mkdir d && for i in $(seq 1 3000); do echo $i > d/f$i; done '
         '&& tar cf t.tar d && rm -rf d && s=$(date +%s%N) && tar xf t.tar && rm -rf d && e=$(date +%s%N) '
         '&& echo $(( (e - s) / 1000000 ))')


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(samples), 3), "min": round(min(samples), 3),
            "max": round(max(samples), 3), "runs": len(samples)}


def evaluate(figures: dict[str, dict[str, float]]) -> list[dict]:
    """One row per target: the median against the target."""
    rows = []
    for name, op, target in TARGETS:
        if name not in figures:
            rows.append({"figure": name, "target": f"{op} {target}", "value": None, "pass": None})
            continue
        value = figures[name]["median"]
        rows.append({"figure": name, "target": f"{op} {target}", "value": value,
                     "pass": value <= target if op == "<=" else value >= target})
    return rows


def table(figures: dict[str, dict[str, float]], rows: list[dict]) -> str:
    lines = [f"{'figure':32} {'median':>10} {'min':>10} {'max':>10} {'runs':>5}  target"]
    targets = {r["figure"]: r for r in rows}
    for name, s in figures.items():
        row = targets.get(name)
        verdict = "" if row is None else f"{row['target']}  {'PASS' if row['pass'] else 'FAIL'}"
        lines.append(f"{name:32} {s['median']:>10} {s['min']:>10} {s['max']:>10} {s['runs']:>5}  {verdict}")
    return "\n".join(lines) + "\n"


def _ms_lines(text: str) -> list[float]:
    return [int(line) / 1000.0 for line in text.split() if line.strip().isdigit()]


def run(config: Config, runs: int, out: Path) -> int:
    image = config.image_ref
    figures: dict[str, dict[str, float]] = {}
    tools.say(f"bench: {image}, {runs} runs per figure")
    build.build(config)  # make sure the image exists; the timed rebuilds below change nothing
    inspect = json.loads(hosts.sh(["podman", "image", "inspect", image]).stdout)[0]
    figures["image_size_mb"] = summary([inspect["Size"] / 1e6])
    figures["image_layers"] = summary([float(len(inspect["RootFS"]["Layers"]))])

    warm = []
    for _ in range(runs):
        started = time.monotonic()
        build.build(config)
        warm.append(time.monotonic() - started)
    figures["warm_rebuild_seconds"] = summary(warm)

    host_true = _ms_lines(hosts.sh(["sh", "-c", LOOP.format(
        n=runs, cmd=f"podman run --rm --network host --entrypoint /bin/true {image}")]).stdout)
    host_files = [_ms_lines(hosts.sh(["podman", "run", "--rm", "--entrypoint", "/bin/sh", image, "-c", FILES]
                                     ).stdout)[0] for _ in range(runs)]

    cleanup: list = []
    try:
        target = verify.setup_full(image, "pipglr-bench", cleanup)
        socket = "--url unix:///run/pipglr/podman.sock"
        nested = target.exec("sh", "-c", LOOP.format(
            n=runs, cmd=f"podman {socket} run --rm --network host --entrypoint /bin/true {image}"), user="runner")
        nested_true = _ms_lines(nested.stdout)
        nested_files = [_ms_lines(target.exec(
            "podman", "--url", "unix:///run/pipglr/podman.sock", "run", "--rm", "--network", "host",
            "--entrypoint", "/bin/sh", image, "-c", FILES, user="runner").stdout)[0] for _ in range(runs)]
        rss = target.exec("sh", "-c", "ps -eo rss= | awk '{ s += $1 } END { print s }'").stdout.strip()
        figures["idle_memory_mib"] = summary([int(rss) / 1024.0])
    finally:
        for close in cleanup:
            close()
    figures["host_run_true_seconds"] = summary(host_true)
    figures["nested_run_true_seconds"] = summary(nested_true)
    figures["nested_run_true_ratio"] = summary([n / statistics.median(host_true) for n in nested_true])
    figures["host_files_seconds"] = summary(host_files)
    figures["nested_files_seconds"] = summary(nested_files)
    figures["nested_files_ratio"] = summary([n / statistics.median(host_files) for n in nested_files])

    rows = evaluate(figures)
    out.mkdir(parents=True, exist_ok=True)
    report = {"image": image, "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "figures": figures, "targets": rows}
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    text = table(figures, rows)
    (out / "bench.txt").write_text(text)
    tools.say(text)
    return 0 if all(r["pass"] for r in rows if r["pass"] is not None) else 1
