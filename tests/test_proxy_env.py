"""files/proxy-env: what becomes of the HTTP proxy a user gives (checked, both cases, NO_PROXY completed), run
with the host's sh on made-up environments; and where the rendered image sends it. The proxy end to end:
tests/test_proxy.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipglr_builder import config, render

SUBNETS = ",".join(render.JOB_SUBNETS)
ALWAYS = f"localhost,127.0.0.0/8,::1,{SUBNETS}"  # what NO_PROXY always ends with


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("proxy-env") / "proxy-env"
    path.write_text(render.render_file(config.load(None), "files/proxy-env"))
    return path


def proxy_env(script: Path, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """The script with exactly ENV (and a PATH)."""
    return subprocess.run(["sh", str(script)], env={"PATH": "/usr/bin:/bin", **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=30, check=False)


def lines(proc: subprocess.CompletedProcess) -> dict[str, str]:
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


@pytest.mark.tools
def test_no_proxy_given_means_nothing_at_all(script):
    assert lines(proxy_env(script)) == {}
    assert lines(proxy_env(script, NO_PROXY=".example.com")) == {}  # NO_PROXY without a proxy means nothing


@pytest.mark.tools
def test_either_case_given_gives_both_and_no_proxy_always_keeps_loopback_and_the_job_networks(script):
    url = "http://user:p%24ss@proxy.example.com:3128"
    assert lines(proxy_env(script, http_proxy=url)) == {
        "HTTP_PROXY": url, "http_proxy": url, "NO_PROXY": ALWAYS, "no_proxy": ALWAYS}
    got = lines(proxy_env(script, HTTPS_PROXY="https://[2001:db8::1]:3129/", HTTP_PROXY="socks5h://proxy:1080"))
    assert got["https_proxy"] == got["HTTPS_PROXY"] == "https://[2001:db8::1]:3129/"
    assert got["http_proxy"] == "socks5h://proxy:1080" and got["no_proxy"] == ALWAYS


@pytest.mark.tools
def test_the_users_no_proxy_comes_first_merged_from_both_cases_once_each(script, tmp_path):
    (tmp_path / "a-file").write_text("")  # a * must stay a *, not become the names of files here
    got = lines(proxy_env(script, cwd=tmp_path, HTTPS_PROXY="http://proxy:3128",
                          NO_PROXY=" .corp.example, 10.0.0.0/8,localhost", no_proxy="*,.corp.example,[::1]:8080"))
    assert got["NO_PROXY"] == got["no_proxy"] == f".corp.example,10.0.0.0/8,localhost,*,[::1]:8080,127.0.0.0/8,::1,{SUBNETS}"


@pytest.mark.tools
def test_upper_case_wins_when_both_differ_and_says_so(script):
    proc = proxy_env(script, HTTP_PROXY="http://upper:1", http_proxy="http://lower:2")
    assert lines(proc)["http_proxy"] == "http://upper:1"
    assert "HTTP_PROXY and http_proxy differ; using HTTP_PROXY" in proc.stderr


@pytest.mark.tools
@pytest.mark.parametrize("value", [
    "proxy.example.com:3128",  # no scheme: curl and Go guess http, but the log filter could not see the userinfo
    "ftp://proxy:21", "http://us er:pw@proxy:1", 'http://user:"pw"@proxy:1', "http://user:pa$$@proxy:1",
    "http://user:pw@proxy:1\nEXTRA=injected", "http://proxy:1 ", "http://user:back\\slash@proxy:1", "http://:3128",
])
def test_a_value_that_is_no_proxy_url_is_refused_without_showing_it(script, value):
    proc = proxy_env(script, HTTPS_PROXY=value)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "HTTPS_PROXY is not a proxy URL" in proc.stderr
    assert value.strip() not in proc.stderr and "pw" not in proc.stderr


@pytest.mark.tools
@pytest.mark.parametrize("value", ["a b", "host;rm", "$(id)", "x\ny=1"])
def test_a_no_proxy_entry_that_is_no_host_is_refused(script, value):
    proc = proxy_env(script, HTTP_PROXY="http://proxy:3128", NO_PROXY=value)
    assert proc.returncode == 2 and proc.stdout == "" and "NO_PROXY holds an entry" in proc.stderr


def test_where_the_proxy_goes_in_the_image():
    """Read by runner.service and podman.service from the file pipglr-env writes; passed by `runlabel run`
    and `register` (the quadlet: tests/test_quadlet.py holds it to the run label)."""
    values = render.template_values(config.load(None))
    names = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy")
    for label in ("run", "register"):
        flags = values["runlabels"][label].split()
        assert all(flags[flags.index(name) - 1] == "--env" for name in names), (label, flags)
    assert "--env PIPGLR_PROXY_JOBS" in values["runlabels"]["register"]
    for unit in ("systemd/runner.service", "systemd/podman-service.conf"):
        assert f"EnvironmentFile=-{render.PROXY_ENV}" in render.render_file(config.load(None), unit).splitlines()
    env = render.render_file(config.load(None), "files/pipglr-env")
    assert f"{render.LIBEXEC_DIR}/proxy-env" in env and f"> {render.PROXY_ENV}.new" in env
    nested = render.render_file(config.load(None), "files/containers.conf")
    # The jobs' networks come from the range NO_PROXY names.
    assert f'default_subnet_pools = [{{"base" = "{render.JOB_SUBNETS[1]}", "size" = 24}}]' in nested


@pytest.mark.parametrize("setting, written", [(True, "true"), (False, "false")])
def test_proxy_jobs_is_registers_default(tmp_path, setting, written):
    path = tmp_path / "pipglr.toml"
    path.write_text(f"proxy_jobs = {str(setting).lower()}\n")
    text = render.render_file(config.load(path), "files/register.env")
    assert f'PIPGLR_PROXY_JOBS="${{PIPGLR_PROXY_JOBS:-{written}}}"' in text.splitlines()
