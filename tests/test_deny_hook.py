"""The deny hook's decision (NESTED_PRIVILEGED=false), its jq program run directly on OCI configs.

The fixtures in fixtures/oci are config.json files the nested podman 5.4 of a booted
image wrote (`podman create` + `podman init` as user podman, trimmed to what the hook
reads: capabilities, mounts, namespaces, masked paths, devices, seccomp's default
action), with the container's ID from the hook's OCI state. The slow verify
(checks/test_nested.py) proves the hook in place, through the Docker API.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipglr_builder import config, processes, render

pytestmark = pytest.mark.tools
FIXTURES = Path(__file__).parent / "fixtures" / "oci"
BUILDING_DOC = (render.PROJECT / "docs" / "building.md").read_text()  # "Verifying an image" moved there
OUTER = "mounts from the outer container: "

# What gitlab-runner's own config makes (builds and cache volumes, the CA bundle, an old
# /cache bind), on a network of its own or the host's: runs.
ALLOWED = ("job", "job-host-network", "legacy-cache", "anonymous-volume")
# -v SOURCE:... of a path of the outer container, or :O over one: refused, the path named.
REFUSED = {
    "bind-dev": OUTER + "/dev",
    "bind-proc": OUTER + "/proc",
    "bind-sys": OUTER + "/sys",
    "bind-sys-rw": OUTER + "/sys",  # /sys:/sys:rw instead of podman's own read-only /sys
    "bind-run-pipglr": OUTER + "/run/pipglr",  # the API socket's folder
    "bind-root": OUTER + "/",
    "bind-home": OUTER + "/home/podman",
    "bind-storage": OUTER + "/home/podman/.local/share/containers",  # every job's images and volumes
    "bind-other-userdata": OUTER + "/run/user/1000/containers/overlay-containers",  # other jobs' files
    # A path inside a volume may be a link a job planted there (to / for instance).
    "bind-volume-below": OUTER + "/home/podman/.local/share/containers/storage/volumes/"
                                 "runner-t3st-project-7-concurrent-0-cache-c33bcaa1fd2c77edfc3893b41966cea8/_data/link",
    "bind-cache-below": OUTER + "/cache/sub",
    "overlay-root": "overlay mounts of the outer container: /",
    "privileged": "privileged (or unmask=ALL)",
}


def decide(name: str, container_id: str | None = None) -> str:
    values = render.template_values(config.load(None))
    program = render._environment().get_template("files/deny-privileged-jobs.jq").render(values)
    caps = re.search(r'^DEFAULT_CAPS="([A-Z_ ]+)"$', render.render_file(config.load(None), "files/deny-privileged-jobs"),
                     re.MULTILINE).group(1)
    fixture = json.loads((FIXTURES / f"{name}.json").read_text())
    proc = processes.call(["jq", "-r", "--arg", "caps", caps, "--arg", "id",
                           fixture["id"] if container_id is None else container_id, program],
                          input=json.dumps(fixture["config"]))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize("name", ALLOWED)
def test_what_the_runner_mounts_runs(name):
    assert decide(name) == ""


@pytest.mark.parametrize("name", REFUSED)
def test_paths_of_the_outer_container_are_refused_by_name(name):
    assert decide(name) == REFUSED[name]


def test_podmans_files_of_another_container_are_refused():
    # The files podman makes for a container count only for that container (fail closed without an ID).
    reasons = decide("job", container_id="")
    assert reasons.startswith(OUTER) and "/userdata/hosts" in reasons and "/userdata/resolv.conf" in reasons, reasons


def test_readme_names_what_is_refused():
    hook_section = BUILDING_DOC[BUILDING_DOC.index("NESTED_PRIVILEGED=false is enforced inside the image"):]
    hook_section = hook_section[:hook_section.index("## Nightly builds")]
    for path in ("`/dev`", "`/proc`", "`/sys`", "`/run/pipglr`", "`/`", "`/home/...`", "`:O`", "the CA bundle",
                 "inside a volume", "`exec` with `Privileged: true`"):
        assert path in hook_section, path
