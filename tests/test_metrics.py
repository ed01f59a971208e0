"""gitlab-runner's Prometheus metrics (`metrics_listen`): off by default; one setting writes the live
config's top-level listen_address (files/set-metrics-listen, run as runner by runner-config) and
publishes the port through the run label and the quadlet. The slow test scrapes it on the stand-in host."""

from __future__ import annotations

import shlex
import uuid

import pytest

from pipglr_builder import config, processes, quadlet, render
from pipglr_builder.errors import ConfigError
from pipglr_builder.processes import wait_for
from pipglr_builder.standin import StandIn
from pipglr_builder.verify import RUNNER as NEVER_REGISTERED

from .conftest import BASE, IMAGE_NAME, cli, runner_args, sh

LIVE = """\
# registered by pipglr
concurrent = 2
listen_address = "127.0.0.1:9999"
check_interval = 3

[session_server]
  listen_address = "0.0.0.0:8093"
  advertise_address = "runner.example.com:8093"

[[runners]]
  name = "one"
  token = "glrt-abc"
"""


def run_label(cfg: config.Config) -> list[str]:
    return shlex.split(render.template_values(cfg)["runlabels"]["run"])


def test_metrics_are_off_by_default():
    cfg = config.load(None)
    assert cfg.metrics_listen == ""
    assert "--publish" not in run_label(cfg)
    assert "PublishPort=" not in quadlet.render_quadlet(cfg, "localhost/pipglr:latest")
    assert "\nmetrics=''\n" in render.render_file(cfg, "files/runner-config")


def test_one_setting_publishes_the_metrics():
    cfg = config.load(None, {"metrics_listen": "0.0.0.0:9252"})
    argv = run_label(cfg)
    assert argv[-3:] == ["--publish", "9252:9252", "$IMAGE"], argv
    assert "PublishPort=9252:9252" in quadlet.render_quadlet(cfg, "localhost/pipglr:latest").splitlines()
    assert "\nmetrics='0.0.0.0:9252'\n" in render.render_file(cfg, "files/runner-config")
    assert 'LABEL io.pipglr.metrics="0.0.0.0:9252"' in render.render_file(cfg, "Containerfile.j2")
    both = config.load(None, {"metrics_listen": "0.0.0.0:9252", "session_server_listen": "0.0.0.0:8093"})
    argv = run_label(both)
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--publish"] == ["8093:8093", "9252:9252"]


@pytest.mark.parametrize("overrides, problem", [
    ({"metrics_listen": "9252"}, "expected HOST:PORT"),
    ({"metrics_listen": "0.0.0.0:9252\"\nx"}, "expected HOST:PORT"),
    ({"metrics_listen": "0.0.0.0:8093", "session_server_listen": "0.0.0.0:8093"}, "both use port 8093"),
])
def test_bad_metrics_address_is_refused(overrides, problem):
    with pytest.raises(ConfigError, match=problem):
        config.load(None, overrides)


@pytest.fixture
def set_metrics_listen(tmp_path):
    script = tmp_path / "set-metrics-listen"
    script.write_text(render.render_file(config.load(None), "files/set-metrics-listen"))

    def run(live_text: str, address: str) -> tuple[str, str]:
        live = tmp_path / "config.toml"
        live.write_text(live_text)
        live.chmod(0o600)
        proc = processes.call(["sh", str(script), str(live), address])
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "set-metrics-listen"], "a temp file left"
        return live.read_text(), proc.stderr
    return run


@pytest.mark.tools
def test_the_live_configs_top_level_address_is_replaced_and_tables_kept(set_metrics_listen):
    text, said = set_metrics_listen(LIVE, "0.0.0.0:9252")
    assert text == 'listen_address = "0.0.0.0:9252"\n' + LIVE.replace('listen_address = "127.0.0.1:9999"\n', "")
    assert "metrics listen on 0.0.0.0:9252" in said
    again, _ = set_metrics_listen(text, "0.0.0.0:9252")
    assert again == text, "setting it again changes nothing"


@pytest.mark.tools
def test_a_config_without_an_address_gets_one_before_its_tables(set_metrics_listen):
    text, _ = set_metrics_listen('concurrent = 1\n[[runners]]\n  name = "x"\n', "127.0.0.1:9252")
    assert text == 'listen_address = "127.0.0.1:9252"\nconcurrent = 1\n[[runners]]\n  name = "x"\n'


@pytest.mark.slow
def test_metrics_are_scraped_on_the_users_host():
    """An image built with metrics_listen, started by `runlabel run` on the stand-in host: gitlab-runner's
    /metrics answers on the host's port 9252, and the secret's own top-level address was replaced."""
    tag = f"t-metrics-{uuid.uuid4().hex[:8]}"
    ref = f"{IMAGE_NAME}:{tag}"
    cli("build", "--image-name", IMAGE_NAME, "--tags", tag, "--metrics-listen", "0.0.0.0:9252", *runner_args())
    standin = StandIn(BASE)
    try:
        standin.start()
        standin.load_image("alice", ref)

        def alice(*argv: str, check: bool = True, input: str | None = None):
            return standin.as_user("alice", list(argv), check=check, input=input)

        alice("podman", "secret", "create", "config.toml", "-",
              input='listen_address = "127.0.0.1:9999"\nconcurrent = 1\n' + NEVER_REGISTERED)
        for label in ("setupstorage", "setupcache", "run"):
            alice("podman", "container", "runlabel", label, ref)
        standin.wait_booted()

        def scraped():
            result = alice("curl", "-sS", "--max-time", "5", "http://127.0.0.1:9252/metrics", check=False)
            return result.stdout if result.returncode == 0 else None
        metrics = wait_for(scraped, 120, interval=2, what="gitlab-runner's /metrics on the host's port 9252")
        assert 'gitlab_runner_version_info{' in metrics and "gitlab_runner_concurrent 1" in metrics, metrics[:2000]
        live = alice("podman", "exec", "pipglr", "cat", render.LIVE_CONFIG).stdout
        assert live.startswith('listen_address = "0.0.0.0:9252"\n') and "9999" not in live, live
    finally:
        standin.close()
        sh("podman", "rmi", "--force", ref, check=False)
