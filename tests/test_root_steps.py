"""Root in the image never writes, chmods or follows a path that podman or runner can change.

The root steps (runner-config and pipglr-prune --helpers, both ExecStartPre=+, and
pipglr-env at boot) run here directly, rendered with the image's template values
but with their folders in a scratch folder, as root, with podman and runner as
two unused UIDs. Symbolic links are planted as podman and as runner, as a job's
root that got out of its container (uid podman) or a compromised runner would.
Marked `tools`: they run sh, setpriv, chown. They need root (as the suite runs here).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from pipglr_builder import config, processes, render

pytestmark = pytest.mark.tools
PODMAN, RUNNER = 4242, 4343  # no such users on this host: setpriv takes numbers
LIVE = 'concurrent = 1\n[[runners]]\n  token = "glrt-lIvEtOkEn"\n  [runners.docker]\n    helper_image = "reg.example/helper:v1"\n'


class World:
    """A scratch root: folders owned as in the image (state: runner, run: podman, run-root: root)."""

    def __init__(self, base: Path):
        self.base = base
        self.state, self.run, self.run_root = base / "state", base / "run", base / "run-root"
        self.secrets, self.home, self.root_only, self.bin = (base / "secrets", base / "home" / "podman",
                                                             base / "root-only", base / "bin")
        for folder, uid, mode in ((self.state, RUNNER, 0o700), (self.run, PODMAN, 0o750), (self.run_root, 0, 0o755),
                                  (self.secrets, 0, 0o755), (self.home, PODMAN, 0o755), (self.root_only, 0, 0o755),
                                  (self.bin, 0, 0o755)):
            folder.mkdir(parents=True)
            os.chown(folder, uid, uid)
            folder.chmod(mode)
        self.values = {**render.template_values(config.load(None, {"podman_uid": str(PODMAN),
                                                                    "runner_uid": str(RUNNER)})),
                       "state_dir": str(self.state), "run_dir": str(self.run), "run_root_dir": str(self.run_root),
                       "run_env": str(self.run_root / "env"), "config_secret": str(self.secrets / "config.toml"),
                       "podman_home": str(self.home), "cgroup_root": str(base / "no-cgroup"),
                       "libexec_dir": str(self.bin)}
        for name in ("config-lib", "convert-pipglr-config"):  # what runner-config and pipglr-prune call
            self.script(name)

    def script(self, name: str) -> Path:
        path = self.bin / name
        path.write_text(render._environment().get_template(f"files/{name}").render(self.values))
        path.chmod(0o755)
        return path

    def root_file(self, name: str, text: str) -> Path:
        """A file only root may read and write, outside everything podman and runner own."""
        path = self.root_only / name
        path.write_text(text)
        path.chmod(0o600)
        return path

    def as_user(self, uid: int, *argv: str) -> None:
        proc = processes.call(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv])
        assert proc.returncode == 0, proc.stderr

    def run_as_root(self, *argv: str):
        return processes.call(["sh", *argv], env={"PATH": os.environ["PATH"]})


@pytest.fixture
def world():
    if os.geteuid() != 0:
        pytest.skip("needs root: the root steps are run as root, the planting as two other UIDs")
    base = Path(tempfile.mkdtemp(prefix="pipglr-root-steps-"))
    base.chmod(0o755)  # podman and runner must reach their folders
    try:
        yield World(base)
    finally:
        shutil.rmtree(base)


def unchanged(path: Path, text: str) -> None:
    info = path.lstat()
    assert stat.S_ISREG(info.st_mode) and info.st_uid == 0 and stat.S_IMODE(info.st_mode) == 0o600, info
    assert path.read_text() == text


def test_runner_config_writes_in_the_state_folder_only_as_runner(world):
    victim = world.root_file("victim", "root's file\n")
    secret = world.secrets / "config.toml"
    secret.write_text(LIVE)
    os.chown(secret, RUNNER, RUNNER)
    secret.chmod(0o400)
    # Runner plants its seed marker as a link to a file of root's: root used to write the checksum into it.
    world.as_user(RUNNER, "ln", "-s", str(victim), str(world.state / ".seeded-from-secret.sha256"))
    # A file of root's in the state folder (an older image's, or an admin's): root no longer chowns the
    # folder's content (runner could swap a link in), and runner replaces what it must.
    (world.state / "left-by-root").write_text("x")
    proc = world.run_as_root(str(world.script("runner-config")))
    assert proc.returncode == 0, proc.stderr
    assert "seeded from the config.toml secret" in proc.stderr
    unchanged(victim, "root's file\n")
    live = (world.state / "config.toml").lstat()
    assert (live.st_uid, stat.S_IMODE(live.st_mode)) == (RUNNER, 0o600)
    assert (world.state / "config.toml").read_text() == LIVE
    seeded = (world.state / ".seeded-from-secret.sha256").lstat()
    assert stat.S_ISREG(seeded.st_mode) and seeded.st_uid == RUNNER
    assert (world.state / "left-by-root").stat().st_uid == 0
    assert world.state.stat().st_uid == RUNNER


def test_runner_config_as_runner_cannot_read_a_secret_it_was_not_given(world):
    secret = world.secrets / "config.toml"
    secret.write_text(LIVE)
    secret.chmod(0o400)  # root's: a container not started with the run runlabel's uid=
    proc = world.run_as_root(str(world.script("runner-config")))
    assert proc.returncode == 1
    assert "is not readable by runner: start the container with the run runlabel" in proc.stderr, proc.stderr
    assert not (world.state / "config.toml").exists()


def test_prune_helpers_never_writes_where_podman_can_plant_a_link(world):
    live = world.state / "config.toml"
    live.write_text(LIVE)
    os.chown(live, RUNNER, RUNNER)
    live.chmod(0o600)
    # What podman could do before: its own /run/pipglr/prune-helpers -> the live config. The daily
    # prune emptied the live config (tokens lost) and made it world-readable.
    world.as_user(PODMAN, "ln", "-s", str(live), str(world.run / "prune-helpers"))
    proc = world.run_as_root(str(world.script("pipglr-prune")), "--helpers")
    assert proc.returncode == 0, proc.stderr
    info = live.lstat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode), live.read_text()) == (RUNNER, 0o600, LIVE)
    helpers = world.run_root / "prune-helpers"
    assert helpers.read_text() == "reg.example/helper:v1\n"
    assert (helpers.stat().st_uid, stat.S_IMODE(helpers.stat().st_mode)) == (0, 0o644)


def test_prune_helpers_reads_the_live_config_as_runner(world):
    # Runner points its config at a file only root may read: root no longer reads it for runner.
    secret = world.root_file("root-config.toml", 'helper_image = "rOoTsEcReT"\n')
    world.as_user(RUNNER, "ln", "-s", str(secret), str(world.state / "config.toml"))
    proc = world.run_as_root(str(world.script("pipglr-prune")), "--helpers")
    assert proc.returncode == 0, proc.stderr
    assert "rOoTsEcReT" not in (world.run_root / "prune-helpers").read_text()
    unchanged(secret, 'helper_image = "rOoTsEcReT"\n')


def test_pipglr_env_touches_podmans_home_only_as_podman(world):
    # Podman replaces a folder on the way to its drop-in with a link to a folder of root's
    # holding a file of that name: root used to remove (or write and chown) it.
    target = world.root_only / "containers.conf.d"
    target.mkdir()
    victim = target / "50-pipglr-host-internal.conf"
    victim.write_text("root's file\n")
    victim.chmod(0o600)
    world.as_user(PODMAN, "mkdir", "-p", str(world.home / ".config"))
    world.as_user(PODMAN, "ln", "-s", str(world.root_only), str(world.home / ".config" / "containers"))
    proc = world.run_as_root(str(world.script("pipglr-env")))
    assert proc.returncode == 0, proc.stderr
    unchanged(victim, "root's file\n")
    env = world.run_root / "env"
    assert "RUNNER_LOG_LEVEL=" in env.read_text()
    assert (env.stat().st_uid, stat.S_IMODE(env.stat().st_mode)) == (0, 0o644)


@pytest.mark.parametrize("controllers, limited", [("cpuset cpu io memory pids", True), ("cpuset cpu io memory", False),
                                                  ("", False)])
def test_pipglr_env_limits_job_tasks_only_with_the_pids_controller(world, controllers, limited):
    """job_pids_limit goes to the nested podman where this container has the pids controller; elsewhere (this
    machine, whose cgroups delegate none) podman would fail every job with a limit: none, and the boot says so."""
    cgroup = world.base / "cgroup"
    cgroup.mkdir()
    (cgroup / "cgroup.controllers").write_text(controllers + "\n")
    world.values["cgroup_root"] = str(cgroup)
    dropin = world.home / ".config" / "containers" / "containers.conf.d"
    world.as_user(PODMAN, "mkdir", "-p", str(dropin))
    conf = dropin / "60-pipglr-job-pids.conf"
    if not limited:  # left by a boot on a host that delegated pids
        world.as_user(PODMAN, "sh", "-c", f"echo '[containers]' > {conf}")
    proc = world.run_as_root(str(world.script("pipglr-env")))
    assert proc.returncode == 0, proc.stderr
    said = proc.stdout + proc.stderr
    if limited:
        assert conf.read_text() == "[containers]\npids_limit = 4096\n"
        assert conf.stat().st_uid == PODMAN
        assert "each job may run 4096 tasks (job_pids_limit)" in said, said
        assert "without a task limit" not in said
    else:
        assert not conf.exists()
        assert said.count("pipglr: jobs run without a task limit: the host delegates no pids controller") == 1, said
        assert "job_pids_limit=4096 not applied" in said and "doctor" in said


def test_pipglr_env_says_nothing_when_job_pids_limit_is_0(world):
    cgroup = world.base / "cgroup"
    cgroup.mkdir()
    (cgroup / "cgroup.controllers").write_text("cpu memory\n")
    world.values.update(cgroup_root=str(cgroup), job_pids_limit=0)
    world.as_user(PODMAN, "mkdir", "-p", str(world.home / ".config" / "containers" / "containers.conf.d"))
    proc = world.run_as_root(str(world.script("pipglr-env")))
    assert proc.returncode == 0, proc.stderr
    assert "task limit" not in proc.stdout + proc.stderr
    assert not (world.home / ".config" / "containers" / "containers.conf.d" / "60-pipglr-job-pids.conf").exists()
