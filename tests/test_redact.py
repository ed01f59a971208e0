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
