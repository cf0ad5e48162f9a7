"""Secrets and config maps end to end: a function reads both as files (and a secret through an
env var); the value never shows in `fn get`, `secret get`, the API or a `--spec` file, nor in
plain text on disk; updating the secret rolls the function; a Fission spec's `secrets:` mounts
it; and the same code works without mount namespaces (`--sandbox off`)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from syskit import Platform, Spawn, wait_for, write

VALUE = "postgres://students:s3cr3t-Zq81@db.internal/students"
# What must never show: this secret's own password. The check of the data dir at rest reads
# the shared platform's, which other test files fill too (test_webhooks.py's signing key
# "s3cr3t-webhook-key" is in its route's record, not sealed): a marker only this value holds.
SECRET_MARK = "s3cr3t-Zq81"
NEW_VALUE = "postgres://students:r0tated-Kx22@db.internal/students"
CONFIG = "courses-per-page=25"

READER = """
import os
import uuid

import fissile

INSTANCE = uuid.uuid4().hex


def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return exc.strerror


def main(request):
    base = os.environ.get("FISSILE_SECRETS_DIR", "/secrets")
    with open(os.path.join(base, "default", "{secret}", "url")) as handle:
        from_file = handle.read()
    try:
        open(os.path.join(base, "default", "{secret}", "url"), "a").close()
        writable = "writable"
    except OSError as exc:
        writable = exc.strerror
    return {{
        "writable": writable,
        "read_only_mount": bool(os.statvfs(base).f_flag & os.ST_RDONLY),
        "values_root": listing("/.values"),
        "secret": from_file,
        "helper": fissile.secret("{secret}", "url"),
        "config": fissile.config("{config}", "settings"),
        "env": os.environ.get("DB_URL"),
        "secrets_dir": base,
        "instance": INSTANCE,
    }}
"""


PEER = """
import os


def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return exc.strerror


def main(request):
    return {{
        "secret_file": os.path.exists("/secrets/default/{secret}/url"),
        "listed": os.listdir("/secrets"),
        "values_root": listing("/.values"),
    }}
"""


def deploy(platform: Platform, tmp_path: Path, prefix: str) -> tuple[str, str, str]:
    secret, config, function = f"{prefix}-db", f"{prefix}-cfg", f"{prefix}-reader"
    url_file = write(tmp_path / "url.txt", VALUE)
    settings = write(tmp_path / "settings.env", f"settings={CONFIG}\n")
    platform.ok("secret", "create", "--name", secret, "--from-file", f"url={url_file}")
    platform.ok("configmap", "create", "--name", config, "--from-env-file", str(settings))
    code = write(tmp_path / "reader.py", READER.format(secret=secret, config=config))
    platform.ok(
        "fn", "create", "--name", function, "--code", str(code),
        "--secret", secret, "--configmap", config, "--secret-env", f"DB_URL={secret}/url",
    )  # fmt: skip
    return secret, config, function


def call(platform: Platform, function: str) -> dict[str, object]:
    response = platform.get(f"/function/{function}")
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def test_function_reads_secret_and_config_and_the_value_never_shows(
    platform: Platform, tmp_path: Path
) -> None:
    secret, config, function = deploy(platform, tmp_path, "sec")
    answer = call(platform, function)
    assert answer["secret"] == answer["helper"] == answer["env"] == VALUE
    assert answer["config"] == CONFIG
    # Full sandbox on this host: Fission's own path, read-only.
    info = platform.json_of("fn", "get", "--name", function)
    if _full_sandbox(platform):
        assert answer["secrets_dir"] == "/secrets"
        assert answer["writable"] in ("Read-only file system", "Permission denied")
        assert answer["read_only_mount"]
        # Where every function's values are until specialization: gone (an empty, root-only
        # mount point), whatever the function is given.
        assert answer["values_root"] in ([], "Permission denied")
        # A function not given the secret finds nothing of it.
        peer = write(tmp_path / "peer.py", PEER.format(secret=secret))
        platform.ok("fn", "create", "--name", "sec-peer", "--code", str(peer))
        seen = call(platform, "sec-peer")
        assert seen["secret_file"] is False and seen["listed"] == []
        assert seen["values_root"] in ([], "Permission denied")
        platform.ok("fn", "delete", "--name", "sec-peer")

    # Names, keys and sizes; never the value.
    shown = [
        platform.ok("fn", "get", "--name", function, "-o", "json").out,
        platform.ok("fn", "get", "--name", function).out,
        platform.ok("secret", "get", "--name", secret).out,
        platform.ok("secret", "get", "--name", secret, "-o", "yaml").out,
        platform.ok("secret", "list", "-o", "json").out,
    ]
    headers = {"authorization": f"Bearer {(platform.data_dir / 'api-token').read_text().strip()}"}
    for path in ("/v1/secrets", f"/v1/secrets/{secret}", f"/v1/functions/{function}"):
        response = httpx.get(platform.api_url + path, headers=headers)
        assert response.status_code == 200, response.text
        shown.append(response.text)
    for text in shown:
        assert SECRET_MARK not in text, text
    assert info["secrets"] == [{"name": secret, "namespace": "default"}]
    assert info["env_vars"] == {"DB_URL": f"${{secret:{secret}/url}}"}
    keys = platform.json_of("secret", "get", "--name", secret)["keys"]
    assert keys == [{"key": "url", "size": len(VALUE)}]
    assert "KEY  SIZE" in shown[2] and f"url  {len(VALUE)} bytes" in shown[2]

    # At rest: only ciphertext in the store; the key is a 0600 file apart from it.
    for stored in platform.data_dir.rglob("*"):
        if stored.is_file():
            assert SECRET_MARK.encode() not in stored.read_bytes(), stored
    key = platform.data_dir / "keys" / "secrets.key"
    assert key.stat().st_mode & 0o777 == 0o600

    # A secret in use cannot be deleted.
    refused = platform.cli("secret", "delete", "--name", secret)
    assert refused.rc == 1 and "in use by function" in refused.err, refused

    # Updating the secret rolls the function onto the new value.
    before = answer["instance"]
    new_file = write(tmp_path / "new-url.txt", NEW_VALUE)
    platform.ok("secret", "update", "--name", secret, "--from-file", f"url={new_file}")
    rolled = wait_for(
        lambda: (a := call(platform, function))["secret"] == NEW_VALUE and a,
        60,
        "the function answering with the updated secret",
    )
    assert rolled["env"] == rolled["helper"] == NEW_VALUE
    assert rolled["instance"] != before
    log = platform.ok("fn", "logs", "--name", function).out
    assert f"secret {secret} changed" in log

    platform.ok("fn", "delete", "--name", function)
    platform.ok_many(
        ("secret", "delete", "--name", secret), ("configmap", "delete", "--name", config)
    )


def _full_sandbox(platform: Platform) -> bool:
    info = httpx.get(
        platform.api_url + "/v1/info",
        headers={
            "authorization": f"Bearer {(platform.data_dir / 'api-token').read_text().strip()}"
        },
    ).json()
    return bool(info["sandbox_active"].get("mount_namespace"))


def test_spec_never_holds_the_value(platform: Platform, tmp_path: Path) -> None:
    url_file = write(tmp_path / "private" / "url.txt", VALUE)
    specs = tmp_path / "specs"
    platform.ok("spec", "init", "--dir", str(specs))
    literal = platform.cli(
        "secret", "create", "--name", "spec-db", "--from-literal", f"url={VALUE}",
        "--spec", "--specdir", str(specs),
    )  # fmt: skip
    assert literal.rc == 1 and "--from-file" in literal.err, literal
    platform.ok(
        "secret", "create", "--name", "spec-db", "--from-file", f"url={url_file}",
        "--spec", "--specdir", str(specs),
    )  # fmt: skip
    platform.ok(
        "fn", "create", "--name", "spec-db-reader", "--code", str(tmp_path / "reader.py"),
        "--secret", "spec-db", "--secret-env", "DB_URL=spec-db/url", "--spec", "--specdir",
        str(specs),
    )  # fmt: skip
    for written in specs.iterdir():
        assert SECRET_MARK not in written.read_text(), written
    assert "fromFile: ../private/url.txt" in (specs / "secret-spec-db.yaml").read_text()

    # A secret written inline is refused unless the document opts in.
    write(
        specs / "inline.yaml",
        """
        apiVersion: fissile.dev/v1
        kind: Secret
        name: spec-inline
        data:
          token: plain-text-in-git
        """,
    )
    refused = platform.cli("spec", "validate", "--dir", str(specs))
    assert refused.rc == 1 and "allowInlineValues" in refused.err, refused
    (specs / "inline.yaml").unlink()

    write(tmp_path / "reader.py", READER.format(secret="spec-db", config="spec-cfg"))
    write(
        specs / "configmap-spec-cfg.yaml",
        """
        apiVersion: fissile.dev/v1
        kind: ConfigMap
        name: spec-cfg
        data:
          settings: courses-per-page=25
        """,
    )
    function_spec = specs / "function-spec-db-reader.yaml"
    function_spec.write_text(function_spec.read_text() + "configmaps: [spec-cfg]\n")
    platform.ok("spec", "apply", "--dir", str(specs), "--wait")
    answer = call(platform, "spec-db-reader")
    assert answer["secret"] == answer["env"] == VALUE
    assert answer["config"] == CONFIG
    # Applied again unchanged: nothing to do, nothing rolls.
    again = platform.ok("spec", "apply", "--dir", str(specs))
    assert "0 created, 0 updated" in again.out, again
    platform.ok("spec", "destroy", "--dir", str(specs))


FISSION_FUNCTION = """
apiVersion: fission.io/v1
kind: DeploymentConfig
name: fission-secrets
uid: 0b9f6d8e-4a51-4d7b-9f0e-5d2c1a7e3b42
---
include:
- reader.py
kind: ArchiveUploadSpec
name: reader-py-a1b2
---
apiVersion: fission.io/v1
kind: Package
metadata:
  name: fission-reader-pkg
  namespace: default
spec:
  deployment:
    type: url
    url: archive://reader-py-a1b2
  environment:
    name: python
    namespace: default
---
apiVersion: fission.io/v1
kind: Function
metadata:
  name: fission-reader
  namespace: default
spec:
  environment:
    name: python
    namespace: default
  package:
    functionName: reader.main
    packageref:
      name: fission-reader-pkg
      namespace: default
  secrets:
  - name: fission-db
    namespace: default
  configmaps:
  - name: fission-cfg
    namespace: default
"""


def test_fission_spec_secrets_are_mounted(platform: Platform, tmp_path: Path) -> None:
    url_file = write(tmp_path / "url.txt", VALUE)
    platform.ok("secret", "create", "--name", "fission-db", "--from-file", f"url={url_file}")
    platform.ok(
        "configmap", "create", "--name", "fission-cfg", "--from-literal", f"settings={CONFIG}"
    )
    project = tmp_path / "project"
    write(project / "reader.py", READER.format(secret="fission-db", config="fission-cfg"))
    write(project / "specs" / "app.yaml", FISSION_FUNCTION)
    applied = platform.ok("spec", "apply", "--dir", str(project / "specs"), "--wait")
    assert "secrets" not in applied.err, applied  # mapped, not dropped with a warning
    answer = call(platform, "fission-reader")
    assert answer["secret"] == VALUE and answer["config"] == CONFIG
    platform.ok("spec", "destroy", "--dir", str(project / "specs"))
    platform.ok_many(
        ("secret", "delete", "--name", "fission-db"),
        ("configmap", "delete", "--name", "fission-cfg"),
    )


def test_without_mount_namespaces_the_same_code_reads_its_values(
    spawn: Spawn, tmp_path: Path
) -> None:
    platform = spawn(None, "--sandbox", "off")
    secret, _config, function = deploy(platform, tmp_path, "off")
    answer = call(platform, function)
    assert answer["secret"] == answer["helper"] == answer["env"] == VALUE
    assert answer["config"] == CONFIG
    # Not Fission's path here (no mount namespace): the directory the platform named.
    assert answer["secrets_dir"] != "/secrets"
    assert json.dumps(platform.json_of("fn", "get", "--name", function)).count(SECRET_MARK) == 0
    platform.ok("fn", "delete", "--name", function)
    platform.stop_cleanly()
    assert secret
