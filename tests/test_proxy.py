"""Behind an HTTP proxy: the test GitLab is reachable only through a real forward proxy (Debian's tinyproxy,
with a password), and register, gitlab-runner, the jobs' clone, cache and artifacts and the nested podman's
image pulls go through it, given as the user gives it: HTTP_PROXY and friends at `runlabel register` and
`runlabel run`.

In the stand-in host the coordinator listens on 192.0.2.10 (on its loopback device), and a firewall rule
(nft, in the stand-in's network namespace) refuses every connection alice's processes make to its port:
pasta, which carries all traffic of alice's containers, runs as alice, tinyproxy as its own user. So
pipglr and its jobs reach GitLab only through the proxy, at host.containers.internal:8888.
"""

from __future__ import annotations

import ipaddress
import re
import uuid

import pytest

from pipglr_builder import processes
from pipglr_builder.harness.coordinator import VOLUME, Coordinator, Repository
from pipglr_builder.render import JOB_SUBNETS
from pipglr_builder.standin import USERS, StandIn

from .conftest import BASE, HELPER
from .test_e2e import World
from .test_e2e_jobs import ARTIFACTS, CACHE

pytestmark = pytest.mark.slow
GITLAB_ADDRESS = "192.0.2.10"  # TEST-NET-1: the stand-in's own, for the coordinator and tinyproxy only
GITLAB = f"http://{GITLAB_ADDRESS}:8080"
PASSWORD = f"proxy-pw-{uuid.uuid4().hex[:12]}"
PROXY = f"http://pipglr:{PASSWORD}@host.containers.internal:8888"
# http_proxy in curl's case, HTTPS_PROXY in Go's (image pulls are HTTPS: they take HTTPS_PROXY).
GIVEN = (f"http_proxy={PROXY}", f"HTTPS_PROXY={PROXY}", "NO_PROXY=.example.invalid")
PROXY_LOG = "/var/log/tinyproxy/pipglr-test.log"
TINYPROXY_CONF = f"""User tinyproxy
Group tinyproxy
Port 8888
Timeout 600
LogFile "{PROXY_LOG}"
LogLevel Connect
MaxClients 100
BasicAuth pipglr {PASSWORD}
"""
# Refused: every new connection alice's processes (pasta for her containers) make to the coordinator's port.
FIREWALL = (f"nft add table inet pipglr_test && nft add chain inet pipglr_test out "
            f"'{{ type filter hook output priority 0; }}' && nft add rule inet pipglr_test out "
            f"meta skuid {USERS['alice']} tcp dport 8080 reject with tcp reset")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    r = Repository(tmp_path_factory.mktemp("git-root"), tmp_path_factory.mktemp("git-work"))
    r.commit({"README.md": "behind the proxy\n"}, "add README.md")
    return r


@pytest.fixture(scope="module")
def world(image, repo):
    repo.root.chmod(0o755)
    standin = StandIn(BASE, volumes=(VOLUME, f"{repo.root}:/git:ro"))
    try:
        standin.start()

        def root(command: str):
            return standin_exec(standin, command)
        root(f"ip address add {GITLAB_ADDRESS}/32 dev lo")
        root(f"cat > /etc/tinyproxy/pipglr-test.conf <<'EOF'\n{TINYPROXY_CONF}EOF")
        root("systemd-run --unit pipglr-test-proxy --quiet tinyproxy -d -c /etc/tinyproxy/pipglr-test.conf")
        root(FIREWALL)
        gitlab = Coordinator(standin, f"reg-{uuid.uuid4().hex}").start("--external-url", GITLAB, "--git-root", "/git")
        w = World(standin, image, gitlab)
        standin.load_image("alice", image)
        yield w
    finally:
        standin.close()


def standin_exec(standin: StandIn, command: str):
    """COMMAND (sh) as root in the stand-in host itself."""
    return processes.execute(["podman", "exec", standin.name, "sh", "-c", command])


def proxy_log(world: World) -> str:
    return standin_exec(world.standin, f"cat {PROXY_LOG}").stdout


def requests_through_the_proxy(world: World) -> list[str]:
    """The request lines tinyproxy logged: 'GET http://...', 'CONNECT host:port'."""
    return re.findall(r"Request \(file descriptor \d+\): (\S+ \S+)", proxy_log(world))


def test_behind_a_proxy_register_run_jobs_and_pulls_go_through_it(world, repo):
    # pipglr's containers cannot reach GitLab directly, only through the proxy.
    direct = world.alice("podman", "run", "--rm", world.image, "curl", "-sS", "-m", "10", "--noproxy", "*",
                         f"{GITLAB}/_test/state", check=False)
    assert direct.returncode != 0, direct.stdout
    world.alice("podman", "secret", "create", "REGISTRATION_TOKEN", "-", input=world.registration_token + "\n")
    world.alice("touch", "config.toml")

    # A proxy URL that is not one: refused before anything is written, the value never shown.
    bad = world.alice("env", "HTTPS_PROXY=pipglr:secret-in-a-bad-url@proxy:3128", "podman", "container",
                      "runlabel", "register", world.image, "--", "--url", GITLAB, check=False)
    assert bad.returncode != 0 and "HTTPS_PROXY is not a proxy URL" in bad.stderr, bad.stderr
    assert "secret-in-a-bad-url" not in bad.stdout + bad.stderr
    assert world.alice("cat", "config.toml").stdout == ""

    # As a user gives it, in either case, and a NO_PROXY of her own.
    for name, jobs in (("proxied", ""), ("unproxied", "false")):
        said = world.alice("env", *GIVEN, f"PIPGLR_PROXY_JOBS={jobs}",
                           "podman", "container", "runlabel", "register", world.image, "--", "--url", GITLAB,
                           "--name", name)
        assert "registering through the HTTP proxy given" in said.stderr, said.stderr
        assert PASSWORD not in said.stdout + said.stderr
    config = world.alice("cat", "config.toml").stdout
    proxied, unproxied = config.split("[[runners]]")[1:]
    no_proxy = ",".join([".example.invalid", "localhost", "127.0.0.0/8", "::1", *JOB_SUBNETS])
    for entry in (*(f"{name}={PROXY}" for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy")),
                  f"NO_PROXY={no_proxy}", f"no_proxy={no_proxy}"):
        assert f'"{entry}"' in proxied, proxied
    assert "environment" not in unproxied and PASSWORD not in unproxied, unproxied
    assert requests_through_the_proxy(world).count(f"POST {GITLAB}/api/v4/runners") == 2, proxy_log(world)

    world.alice("podman", "secret", "create", "config.toml", "config.toml")
    for label in ("setupstorage", "setupcache"):
        world.alice("podman", "container", "runlabel", label, world.image)
    world.preload(HELPER)
    world.alice("env", *GIVEN, "podman", "container", "runlabel", "run", world.image)
    world.wait_booted()
    world.load_nested(BASE)
    # Root's file, for the services only (group podman: podman's user manager reads it).
    assert world.outer("stat", "-c", "%U:%G %a", "/run/pipglr-root/proxy.env", check=True).stdout.split() == \
        ["root:podman", "640"]

    # A job with clone, cache and artifacts on the proxied runner; it is on its own network, in NO_PROXY.
    proxied_id, unproxied_id = (r["id"] for r in world.state()["runners"])
    sha = repo.git("rev-parse", "HEAD", cwd=repo.work)
    producer = world.wait_job(world.coordinator("POST", "/_test/jobs", {
        "script": ["cat README.md", "mkdir -p deps out", "echo cached-value > deps/value.txt", "echo built-value > out/result.txt",
                   'echo "proxy in job: ${HTTP_PROXY:+yes} ${http_proxy:+yes}"', 'echo "no_proxy=$no_proxy"',
                   'echo "job address: $(getent hosts "$HOSTNAME" | cut -d" " -f1)"'],
        "image": BASE, "runner_id": proxied_id, "name": "build", "git": {"sha": sha, "ref": "main"},
        "variables": {"GIT_STRATEGY": "clone"}, "cache": CACHE, "artifacts": ARTIFACTS})["id"])
    trace = producer["trace"]
    assert producer["state"] == "success", trace[-3000:]
    assert "behind the proxy" in trace and "Created cache" in trace and "201 Created" in trace, trace[-3000:]
    assert "proxy in job: yes yes" in trace and f"no_proxy={no_proxy}" in trace, trace[-3000:]
    address = re.findall(r"job address: ([0-9.]+)", trace)[-1]  # the output, not the command echoed
    assert ipaddress.ip_address(address) in ipaddress.ip_network(JOB_SUBNETS[1]), address
    consumer = world.wait_job(world.coordinator("POST", "/_test/jobs", {
        "script": ["cat out/result.txt deps/value.txt", 'echo "job no_proxy=$no_proxy NO_PROXY=$NO_PROXY"'],
        "image": BASE, "runner_id": proxied_id, "name": "test", "dependencies": [producer["id"]], "cache": CACHE,
        "variables": {"no_proxy": "db-alias"}})["id"])
    assert consumer["state"] == "success", consumer["trace"][-3000:]
    assert all(text in consumer["trace"] for text in ("Successfully extracted cache", "built-value", "cached-value"))
    # A job's own no_proxy (e.g. naming its services' aliases) replaces the runner's: it lists what it needs.
    assert f"job no_proxy=db-alias NO_PROXY={no_proxy}" in consumer["trace"], consumer["trace"][-3000:]

    # The other runner's jobs get no proxy: neither from config.toml nor from the nested podman's own.
    bare = world.wait_job(world.add_job("echo proxy-variables=$(env | grep -ci _proxy=)", runner_id=unproxied_id))
    assert bare["state"] == "success" and "proxy-variables=0" in bare["trace"], bare["trace"][-3000:]

    # An image pull by the nested podman: through the proxy too (CONNECT; the test GitLab is no registry).
    pulled = world.wait_job(world.add_job("true", image=f"{GITLAB_ADDRESS}:8080/pipglr/through-the-proxy:1",
                                          runner_id=unproxied_id))
    assert pulled["state"] == "failed", pulled["trace"][-3000:]

    seen = requests_through_the_proxy(world)
    for request in (f"POST {GITLAB}/api/v4/jobs/request", f"PATCH {GITLAB}/api/v4/jobs/{producer['id']}/trace",
                    f"GET {GITLAB}/pipglr/e2e.git/info/refs", f"POST {GITLAB}/api/v4/jobs/{producer['id']}/artifacts",
                    f"GET {GITLAB}/api/v4/jobs/{producer['id']}/artifacts", f"CONNECT {GITLAB_ADDRESS}:8080"):
        assert any(line.startswith(request) for line in seen), (request, seen[-40:])
    # Nothing for the podman socket or a job's own network went to the proxy.
    assert not [line for line in seen if GITLAB_ADDRESS not in line], seen
    # The password: in config.toml (a podman secret), nowhere a log or an image shows.
    logs = world.alice("podman", "logs", "pipglr").stdout + world.runner_log() + proxy_log(world)
    logs += world.outer("journalctl", "--no-pager", "-u", "pipglr-env.service").stdout
    logs += "".join(job["trace"] for job in (producer, consumer, bare, pulled))
    logs += world.alice("podman", "image", "inspect", world.image).stdout
    assert "use the HTTP proxy given" in logs
    assert PASSWORD not in logs
    assert producer["job_token"] not in proxy_log(world)
