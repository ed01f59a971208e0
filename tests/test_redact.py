"""redact-secrets, the filter the logs runlabel puts everything through: no token or credential gets out."""


import pytest

from pipglr_builder import processes, render

FILTER = render.TEMPLATES / "files" / "redact-secrets"

CONFIG = '''concurrent = 2
listen_address = "127.0.0.1:9252"
[[runners]]
  name = "e2e"
  url = "https://gitlab.example.com"
  token = "glrt-t3_rUnNeRsEcReT"
  token_obtained_at = 2026-11-24T01:00:00Z
  environment = ["DEPLOY_PASSWORD=env-secret-1",
    "API_TOKEN=env-secret-2"]
  [runners.cache]
    Type = "s3"
    [runners.cache.s3]
      AccessKey = "AKIAS3ACCESSKEYID"
      SecretKey = "s3-secret-key-value"
    [runners.cache.gcs]
      AccessID = "gcs@example.iam"
      PrivateKey = "-----BEGIN gcs-private-key"
    [runners.cache.azure]
      AccountName = "pipglr"
      AccountKey = "azure-account-key-value"
  [runners.docker]
    image = "debian:trixie"
'''
JOURNAL = '''Nov 24 04:32:43 pipglr gitlab-runner[111]: Verifying runner... token=glrt-t3_rUnNeRsEcReT
Nov 24 04:32:44 pipglr gitlab-runner[111]: job token glcbt-64_jObToKeNsEcReT used for clone
Nov 24 04:32:45 pipglr bash[1]: curl -H "PRIVATE-TOKEN: glpat-pErSoNaLsEcReT" https://gitlab.example.com
Nov 24 04:32:46 pipglr gitlab-runner[111]: register with GR1348941lEgAcYsEcReT
'''
SECRETS = ("t3_rUnNeRsEcReT", "env-secret-1", "env-secret-2", "AKIAS3ACCESSKEYID", "s3-secret-key-value",
           "gcs-private-key", "azure-account-key-value", "jObToKeNsEcReT", "pErSoNaLsEcReT", "lEgAcYsEcReT")


@pytest.mark.tools
def test_every_secret_shape_is_redacted():
    proc = processes.call(["sh", str(FILTER)], input=CONFIG + JOURNAL)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    leaked = [s for s in SECRETS if s in out]
    assert leaked == [], out
    # What a bug report needs stays readable.
    for kept in ('url = "https://gitlab.example.com"', 'listen_address = "127.0.0.1:9252"', 'Type = "s3"',
                 "token_obtained_at = 2026-11-24T01:00:00Z", 'image = "debian:trixie"', 'AccountName = "pipglr"',
                 "glrt-[REDACTED]", "glcbt-[REDACTED]", "environment = [REDACTED]"):
        assert kept in out, kept
    assert len(out.splitlines()) == len((CONFIG + JOURNAL).splitlines()) - 1  # the environment array became one line


# Real gitlab-runner lines (runner journal, job trace, git's errors) and a job's environment as
# `env` prints it and as a container's JSON holds it: credentials ride in URLs and in variables.
RUNNER_LOG = '''Dec 04 02:10:11 pipglr gitlab-runner[95]: Checking for jobs... received                       job=42 repo_url=https://gitlab.example.com/group/project.git runner=t3_rUnNe
Dec 04 02:10:12 pipglr gitlab-runner[95]: Fetching changes with git depth set to 20...
Dec 04 02:10:12 pipglr gitlab-runner[95]: Initialized empty Git repository in /builds/group/project/.git/
Dec 04 02:10:12 pipglr gitlab-runner[95]: Created fresh repository.
Dec 04 02:10:13 pipglr gitlab-runner[95]: fatal: unable to access 'https://gitlab-ci-token:64_pLaInJoBtOkEn@gitlab.example.com/group/project.git/': The requested URL returned error: 403
Dec 04 02:10:13 pipglr gitlab-runner[95]: git remote set-url origin https://gitlab-ci-token:glcbt-64_cLoNeSeCrEt@gitlab.example.com/group/project.git
Dec 04 02:10:14 pipglr gitlab-runner[95]: Cloning into 'deps'... from https://deploy:hunter2@git.example.com/team/deps.git
Dec 04 02:10:14 pipglr gitlab-runner[95]: pulling from https://dEpLoYtOkEnOnLy@git.example.com/team/other.git
CI_REPOSITORY_URL=https://gitlab-ci-token:64_eNvJoBtOkEn@gitlab.example.com/group/project.git
CI_JOB_TOKEN=64_eNvJoBtOkEn
CI_REGISTRY_PASSWORD="rEgIsTrY pAsS"
CI_SERVER_URL=https://gitlab.example.com
"Env":["CI_JOB_TOKEN=64_jSoNjObToKeN","DEPLOY_SECRET=jSoNsEcReT","CI_PROJECT_PATH=group/project"]
'''
CLONE_CONFIG = '''[[runners]]
  name = "mirror"
  url = "https://gitlab.example.com"
  clone_url = "https://oauth2:s3cr3t@gitlab.example.com"
  [runners.docker]
    image = "debian:trixie"
'''
URL_SECRETS = ("pLaInJoBtOkEn", "cLoNeSeCrEt", "hunter2", "dEpLoYtOkEnOnLy", "eNvJoBtOkEn", "rEgIsTrY", "pAsS",
               "jSoNjObToKeN", "jSoNsEcReT", "s3cr3t", "oauth2", "deploy:")


@pytest.mark.tools
def test_credentials_in_urls_and_job_environments_are_redacted():
    proc = processes.call(["sh", str(FILTER)], input=RUNNER_LOG + CLONE_CONFIG)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    leaked = [s for s in URL_SECRETS if s in out]
    assert leaked == [], out
    for kept in ("repo_url=https://gitlab.example.com/group/project.git runner=t3_rUnNe",
                 "Fetching changes with git depth set to 20...", "Created fresh repository.",
                 "'https://[REDACTED]@gitlab.example.com/group/project.git/': The requested URL returned error: 403",
                 "https://[REDACTED]@git.example.com/team/deps.git", "https://[REDACTED]@git.example.com/team/other.git",
                 "CI_REPOSITORY_URL=https://[REDACTED]@gitlab.example.com/group/project.git",
                 "CI_JOB_TOKEN=[REDACTED]", "CI_REGISTRY_PASSWORD=[REDACTED]",
                 "CI_SERVER_URL=https://gitlab.example.com", '"CI_PROJECT_PATH=group/project"',
                 'clone_url = "https://[REDACTED]@gitlab.example.com"', 'url = "https://gitlab.example.com"'):
        assert kept in out, kept
    assert len(out.splitlines()) == len((RUNNER_LOG + CLONE_CONFIG).splitlines())


@pytest.mark.tools
def test_proxy_credentials_are_redacted_with_or_without_a_scheme():
    """A proxy URL with a password (docs/using.md, Behind a proxy): as pipglr passes it (with a scheme), and as
    curl and Go also accept it from a user's own job or shell (without one)."""
    lines = ('  environment = ["HTTP_PROXY=http://pipglr:pRoXyPaSs1@proxy.example.com:3128", "NO_PROXY=localhost"]\n'
             "Dec 04 02:10:15 pipglr bash[7]: HTTPS_PROXY=https://pipglr:pRoXyPaSs2@proxy.example.com:3129\n"
             "https_proxy=pipglr:pRoXyPaSs3@proxy.example.com:3128 all_proxy=socks5://u:pRoXyPaSs4@proxy:1080\n"
             "export http_proxy=user:pRoXyPaSs5@proxy:3128 no_proxy=.example.com\n")
    proc = processes.call(["sh", str(FILTER)], input=lines)
    assert proc.returncode == 0, proc.stderr
    assert "pRoXyPaSs" not in proc.stdout, proc.stdout
    for kept in ("environment = [REDACTED]", "HTTPS_PROXY=https://[REDACTED]@proxy.example.com:3129",
                 "https_proxy=[REDACTED]@proxy.example.com:3128", "all_proxy=socks5://[REDACTED]@proxy:1080",
                 "http_proxy=[REDACTED]@proxy:3128 no_proxy=.example.com"):
        assert kept in proc.stdout, kept
