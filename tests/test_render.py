"""Rendering: golden build contexts, determinism, subuid ranges, runlabel text."""

import filecmp
import os
import re
import shlex
from pathlib import Path

import pytest

from pipglr_builder import config, processes, render

GOLDEN = Path(__file__).parent / "golden"
CUSTOM = {
    "platforms": "linux/arm64", "prune_interval": "*-*-* 03:30:00", "prune_age": "5d",
    "nested_privileged": "false",
    "podman_uid": "2000", "runner_uid": "3000", "extra_packages": "git,make", "runner_version": "17.5.0",
    "base_suite": "bookworm", "cpus": "1.5", "memory": "4g", "pids_limit": "4096",
}


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name, overrides", [("default", {}), ("custom", CUSTOM)])
def test_render_matches_golden(tmp_path, name, overrides):
    out = render.render(config.load(None, overrides), tmp_path / name)
    if os.environ.get("PIPGLR_UPDATE_GOLDEN"):
        import shutil
        shutil.rmtree(GOLDEN / name, ignore_errors=True)
        shutil.copytree(out, GOLDEN / name)
    assert tree(out) == tree(GOLDEN / name), "rendered context differs; review, then PIPGLR_UPDATE_GOLDEN=1"


def test_render_is_deterministic(tmp_path):
    cfg = config.load(None, CUSTOM)
    a, b = render.render(cfg, tmp_path / "a"), render.render(cfg, tmp_path / "b")
    cmp = filecmp.dircmp(a, b)
    assert not (cmp.diff_files or cmp.left_only or cmp.right_only)
    assert tree(a) == tree(b)
    assert {p.name: p.stat().st_mode for p in a.iterdir()} == {p.name: p.stat().st_mode for p in b.iterdir()}


def test_render_replaces_its_own_old_output(tmp_path):
    out = render.render(config.load(None), tmp_path / "ctx")
    (out / "stale").write_text("x")
    render.render(config.load(None), out)
    assert not (out / "stale").exists()
    assert (out / "Containerfile").is_file()


def test_render_into_an_empty_directory(tmp_path):
    (tmp_path / "ctx").mkdir()
    assert (render.render(config.load(None), tmp_path / "ctx") / "Containerfile").is_file()


@pytest.mark.parametrize("make", ["work tree", "file"])
def test_render_never_deletes_what_it_did_not_make(tmp_path, make):
    """`render --output .` in a work tree must not remove it: no marker, no change."""
    from pipglr_builder.errors import PipglrError
    target = tmp_path / "work"
    if make == "file":
        target.write_text("precious")
    else:
        target.mkdir()
        (target / "precious.txt").write_text("keep me")
    with pytest.raises(PipglrError, match="nothing was changed" if make == "work tree" else "not a directory"):
        render.render(config.load(None), target)
    if make == "file":
        assert target.read_text() == "precious"
    else:
        assert [p.name for p in target.iterdir()] == ["precious.txt"]
        assert (target / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("podman, runner", [(1000, 1001), (2000, 3000), (1, 65535), (65535, 1)])
def test_subids_exclude_root_podman_runner_and_give_65536(podman, runner):
    ranges = render.subid_ranges({0, podman, runner})
    ids = set()
    for start, count in ranges:
        ids.update(range(start, start + count))
    assert len(ids) == 65536
    assert not ids & {0, podman, runner}
    assert max(ids) <= 65538  # fits a host allocation of 65539


def test_default_subuid_file():
    assert render.subid_file("podman", {0, 1000, 1001}) == "podman:1:999\npodman:1002:64537\n"


def test_podman_api_group_is_outside_every_jobs_sub_gid(tmp_path):
    """The API socket's group: mapped in the outer container, but no job process can hold its GID."""
    cfg = config.load(None)
    out = render.render(cfg, tmp_path / "ctx")
    ids = set()
    for line in (out / "subgid").read_text().split():
        _, start, count = line.split(":")
        ids.update(range(int(start), int(start) + int(count)))
    assert render.PODMAN_API_GID not in ids and render.PODMAN_API_GID < render.OUTER_ID_COUNT
    assert len(ids) == 65535 and not ids & {0, cfg.podman_uid, cfg.runner_uid}  # job GIDs 0..65535
    assert (out / "subgid").read_text() == "podman:1:999\npodman:1002:64536\n"
    assert f"groupadd --gid {render.PODMAN_API_GID} podman-api" in (out / "Containerfile").read_text()


def test_runner_binaries_are_copied_in(tmp_path):
    binary = tmp_path / "gitlab-runner"
    binary.write_bytes(b"\x7fELF...")
    out = render.render(config.load(None), tmp_path / "ctx", {"amd64": binary})
    assert (out / "runner" / "gitlab-runner-amd64").read_bytes() == b"\x7fELF..."
    assert (out / "runner" / "VERSION").read_text() == "19.4.0"


@pytest.mark.parametrize("name", render.RUNLABELS)
def test_runlabels_parse_and_use_image(name):
    text = render.template_values(config.load(None))["runlabels"][name]
    argv = shlex.split(text)
    if argv[:2] == ["podman", "exec"]:  # acts on the running container made by `run`
        assert argv[argv.index("pipglr") if "pipglr" in argv else 0] == "pipglr"
    else:
        assert argv[:2] == ["podman", "run"]
        assert "$IMAGE" in argv, "every runlabel that starts a container must run the image it belongs to"
    assert "{{" not in text and "}}" not in text


def test_containerfile_label_escapes_for_buildah():
    assert render.containerfile_label('a "$IMAGE" \\x') == 'a \\"\\$IMAGE\\" \\\\x'


def test_run_label_passes_secret_and_volumes():
    text = render.template_values(config.load(None, {"runner_uid": "1234"}))["runlabels"]["run"]
    assert "--secret config.toml,type=mount,uid=1234,gid=1234,mode=0400" in text
    assert "pipglr-storage:/home/podman/.local/share/containers" in text
    assert "pipglr-cache:/home/podman/.local/share/containers/storage/volumes" in text
    assert "--systemd always" in text


def test_containerfile_honours_pipglr_build_args(tmp_path):
    text = (render.render(config.load(None), tmp_path / "c") / "Containerfile").read_text()
    for arg in ("PRUNE_INTERVAL", "PRUNE_AGE", "RUNNER_VERSION", "TARGETARCH", "NESTED_PRIVILEGED"):
        assert f"ARG {arg}" in text
        assert f"${{{arg}}}" in text
    # The runner comes last so a new version rebuilds only small layers.
    assert text.index("ARG RUNNER_VERSION") > text.index("apt-get install")
    assert text.index("ARG RUNNER_VERSION") > text.index("COPY subuid")


def test_the_image_keeps_no_layer_of_the_base_and_installs_no_docs(tmp_path):
    """Step 1 is a stage copied whole into an empty image, so what it deletes from the base is not stored
    underneath; dpkg's excludes are in place before the first package is installed."""
    out = render.render(config.load(None), tmp_path / "c")
    text = (out / "Containerfile").read_text()
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert froms == ["FROM ${BASE_IMAGE} AS packages", "FROM scratch"]
    assert text.index("COPY dpkg-excludes /etc/dpkg/dpkg.cfg.d/") < text.index("apt-get install") \
        < text.index("FROM scratch") < text.index("COPY --from=packages / /") < text.index("# 2. Users")
    excludes = (out / "dpkg-excludes").read_text().splitlines()
    for path in ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
                 "/usr/libexec/podman/podman-testing"):
        assert f"path-exclude={path}" in excludes
    assert "path-include=/usr/share/doc/*/copyright" in excludes
    for arg in ("BASE_KEY", "BASE_ARCHIVE"):  # FROM scratch inherits no label of the base
        assert f"ARG {arg}=" in text and f'"${{{arg}}}"' in text


def test_the_runners_go_heap_is_collected_at_half_the_default_growth(tmp_path):
    unit = (render.render(config.load(None), tmp_path / "c") / "runner.service").read_text()
    assert "Environment=GOGC=50" in unit.splitlines()


def test_the_journal_kept_in_memory_is_capped(tmp_path):
    out = render.render(config.load(None), tmp_path / "c")
    assert "COPY journald-pipglr.conf /usr/lib/systemd/journald.conf.d/" in (out / "Containerfile").read_text()
    conf = (out / "journald-pipglr.conf").read_text().splitlines()
    assert "[Journal]" in conf and "SystemMaxUse=64M" in conf and "RuntimeMaxUse=16M" in conf


def test_the_age_build_argument_is_checked_by_the_prune_itself(tmp_path):
    """One rule for an age arriving in the image (tests/test_prune_decisions.py: the same as the setting's)."""
    text = (render.render(config.load(None), tmp_path / "c") / "Containerfile").read_text()
    assert '/usr/local/libexec/pipglr/pipglr-prune --check "${PRUNE_AGE}"' in text
    assert "[smhd]" not in text  # no second copy of the rule


def test_register_and_the_doctor_give_the_same_privileged_warning():
    for name in ("files/register", "files/doctor"):
        assert f'"{render.PRIVILEGED_WARNING}"' in render.render_file(config.load(None), name), name


def test_registries_conf_for_nested_podman(tmp_path):
    out = render.render(config.load(None, {"search_registries": "registry.example.com:5000,docker.io",
                                           "registry_mirrors": "docker.io=mirror.example.com"}), tmp_path / "c")
    text = (out / "registries.conf").read_text()
    assert 'unqualified-search-registries = ["registry.example.com:5000", "docker.io"]' in text
    assert 'prefix = "docker.io"' in text and 'location = "mirror.example.com"' in text
    import tomllib
    parsed = tomllib.loads(text)
    assert parsed["registry"][0]["mirror"][0]["location"] == "mirror.example.com"
    assert parsed["short-name-mode"] == "permissive"


def test_build_time_ca_bundle_goes_into_the_context(tmp_path):
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    (tmp_path / "ca.pem").write_text(pem)
    out = render.render(config.load(None, {"ca_bundle": str(tmp_path / "ca.pem")}), tmp_path / "c")
    assert (out / "custom-ca.crt").read_text() == pem
    assert "update-ca-certificates" in (out / "Containerfile").read_text()
    assert (render.render(config.load(None), tmp_path / "d") / "custom-ca.crt").read_text() == ""


def test_session_server_is_off_by_default_and_published_when_set(tmp_path):
    default = render.template_values(config.load(None))
    assert "--publish" not in default["runlabels"]["run"]
    assert (render.render(config.load(None), tmp_path / "a") / "session-server.toml").read_text() == ""
    cfg = config.load(None, {"session_server_listen": "0.0.0.0:8093",
                             "session_server_advertise": "runner.example.com:8093"})
    assert "--publish 8093:8093 $IMAGE" in render.template_values(cfg)["runlabels"]["run"]
    text = (render.render(cfg, tmp_path / "b") / "session-server.toml").read_text()
    assert 'listen_address = "0.0.0.0:8093"' in text and 'advertise_address = "runner.example.com:8093"' in text


def run_flags(overrides: dict[str, str]) -> list[str]:
    return shlex.split(render.template_values(config.load(None, overrides))["runlabels"]["run"])


def test_resource_limits_are_off_by_default_and_in_the_run_label_when_set():
    argv = run_flags({})
    assert argv[argv.index("--pids-limit") + 1] == "0"
    assert "--cpus" not in argv and "--memory" not in argv
    argv = run_flags({"cpus": "2", "memory": "4g", "pids_limit": "4096"})
    assert argv[argv.index("--cpus") + 1] == "2"  # not 2.0
    assert argv[argv.index("--memory") + 1] == "4g"
    assert argv[argv.index("--pids-limit") + 1] == "4096"
    assert argv[-1] == "$IMAGE"
    assert run_flags({"cpus": "0.25"})[run_flags({"cpus": "0.25"}).index("--cpus") + 1] == "0.25"
    assert "--memory" not in run_flags({"cpus": "1"}) and "--cpus" not in run_flags({"memory": "1g"})


def doctor_limits(overrides: dict[str, str], delegated: str) -> tuple[int, str]:
    """The rendered doctor's limit check (its ok/warn/fail and check_outer_limits, run by sh), for a host
    that delegates DELEGATED to the user."""
    script = render.render_file(config.load(None, overrides), "files/doctor")
    helpers = [line for line in script.splitlines() if line.startswith(("ok()", "warn()", "fail()"))]
    check = re.search(r"^check_outer_limits\(\) \{\n.*?^\}\n", script, re.MULTILINE | re.DOTALL)
    assert len(helpers) == 3 and check, "the doctor's helpers or check_outer_limits moved"
    body = "\n".join(["user=alice uid=2000 fails=0 warns=0 delegate_fix=FIX", *helpers, check.group(0),
                      'check_outer_limits "$1"', 'exit "$fails"'])
    proc = processes.call(["sh", "-c", body, "doctor", delegated], timeout=30)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.tools
def test_doctor_names_each_limit_whose_controller_is_not_delegated():
    limits = {"cpus": "1.5", "memory": "4g", "pids_limit": "4096"}
    fails, out = doctor_limits(limits, "cpu pids")
    assert fails == 1, out
    assert "ok    cpus = 1.5: the cpu controller is delegated to alice" in out
    assert "ok    pids_limit = 4096: the pids controller is delegated to alice" in out
    assert ("FAIL  memory = 4g is set on the pipglr container, but alice is not delegated the memory controller "
            "(delegated: cpu pids): podman refuses to start pipglr with this limit\n      fix: FIX") in out, out
    fails, out = doctor_limits(limits, "")
    assert fails == 3 and out.count("(delegated: none)") == 3, out
    assert "the cpu controller" in out and "the pids controller" in out
    assert doctor_limits(limits, "cpuset cpu io memory pids") == (0, doctor_limits(limits, "cpu memory pids")[1])
    # No limit set (the default): nothing to say, whatever the host delegates.
    assert doctor_limits({}, "") == (0, "")


def test_doctor_fix_is_the_delegation_drop_in():
    script = render.render_file(config.load(None), "files/doctor")
    fix = next(line for line in script.splitlines() if line.startswith("delegate_fix="))
    assert "Delegate=cpu cpuset io memory pids" in fix and "/etc/systemd/system/user@.service.d/" in fix
    assert "sudo systemctl daemon-reload" in fix and "reboot" in fix


def test_revision_is_unknown_on_a_host_without_git(monkeypatch):
    """A clone on a host without git still builds: the labels say unknown (no ToolMissing)."""
    monkeypatch.setenv("PATH", "/nonexistent")
    assert render.git_revision() == "unknown" and render.git_source() == "unknown"
