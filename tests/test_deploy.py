"""The deployment files: the Kubernetes manifests against the Kubernetes schemas (offline, with
``kubernetes-validate``, which carries them), and each file against what trackerd does: the
variables it reads, the drain it performs, the probes it answers, the heartbeat it sends."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from trackerd.access import Access
from trackerd.settings import (
    DEFAULT_HEARTBEAT_INTERVAL_S,
    DEFAULT_HEARTBEAT_TIMEOUT_S,
    Settings,
)
from trackerd.web import Head

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VALIDATE), "--strict", *map(str, paths)], capture_output=True, text=True, check=False
    )


def test_every_manifest_passes_the_kubernetes_schemas_strictly() -> None:
    assert len(MANIFESTS) == 6, MANIFESTS
    result = validate(*MANIFESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_does_refuse_a_wrong_manifest(tmp_path: Path) -> None:
    """So that the test above can fail: a field the schema does not have."""
    wrong = tmp_path / "deployment.yaml"
    text = (KUBERNETES / "deployment.yaml").read_text()
    wrong.write_text(text.replace("  replicas: 2", "  replicaz: 2", 1))
    result = validate(wrong)
    assert result.returncode != 0 and "replicaz" in result.stdout + result.stderr


def manifest(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((KUBERNETES / f"{name}.yaml").read_text())
    return loaded


def container() -> dict[str, Any]:
    (only,) = manifest("deployment")["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = only
    return found


def environment() -> dict[str, str]:
    """What a replica's environment holds: the ConfigMap, the Secret, the Deployment's env."""
    env = dict(manifest("configmap")["data"])
    for item in container()["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            secret = item["valueFrom"]["secretKeyRef"]
            assert secret["name"] == manifest("secret")["metadata"]["name"]
            env[item["name"]] = manifest("secret")["stringData"][secret["key"]]
    return env


def test_the_replicas_environment_is_settings_trackerd_accepts() -> None:
    """An unknown or misspelt TRACKERD_ variable would stop every replica at start-up."""
    settings = Settings.load({}, environment())
    assert settings.token and settings.origins == ("https://app.example.com",)
    assert settings.analysis_threads == 1 and settings.max_sessions > 0


def test_the_grace_period_outlasts_the_drain() -> None:
    settings = Settings.load({}, environment())
    spec = manifest("deployment")["spec"]["template"]["spec"]
    drain = settings.drain_delay_s + settings.graceful_timeout_s
    assert spec["terminationGracePeriodSeconds"] >= drain + 2  # and the exit after it
    # Readiness must be able to see the drain before the clients are closed.
    readiness = container()["readinessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz"
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= settings.drain_delay_s
    assert container()["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_kubelets_probes_pass_the_host_check_of_the_replicas() -> None:
    """The README advises ``--allowed-hosts`` for a public deployment, and the ConfigMap sets
    it. kubelet names the pod's IP and the probe's port as Host: every probe must still be
    answered, while any other path keeps refusing that Host (421)."""
    settings = Settings.load({}, {**environment(), "HOST": "0.0.0.0"})  # the image's HOST
    assert settings.hosts, "the ConfigMap follows the README: TRACKERD_ALLOWED_HOSTS"
    access = Access(settings)
    port = container()["ports"][0]["containerPort"]
    pod = ((b"host", f"10.1.2.3:{port}".encode()),)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container()[probe]["httpGet"]
        assert "httpHeaders" not in get  # no Host to keep in step with the ConfigMap
        assert access.host_refusal(Head("GET", get["path"], False, b"", pod)) is None, probe
    refusal = access.host_refusal(Head("GET", "/metrics", False, b"", pod))
    assert refusal is not None and refusal.status == 421


def test_the_pod_runs_as_the_images_user_with_the_numba_cache_on_a_volume() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = re.search(r"useradd .*--uid (\d+)", dockerfile)
    assert uid is not None
    spec = manifest("deployment")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsUser"] == int(uid.group(1))
    assert container()["securityContext"]["readOnlyRootFilesystem"] is True
    cache = environment()["NUMBA_CACHE_DIR"]
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts[cache]]


@pytest.mark.parametrize("directive", ["proxy_read_timeout", "proxy_send_timeout"])
def test_nginx_keeps_a_quiet_client_longer_than_the_heartbeat_takes_to_drop_a_dead_one(
    directive: str,
) -> None:
    conf = (ROOT / "deploy" / "nginx" / "trackerd.conf").read_text()
    found = re.search(rf"^\s*{directive} (\d+)s;", conf, re.MULTILINE)
    assert found is not None
    assert int(found.group(1)) > DEFAULT_HEARTBEAT_INTERVAL_S + DEFAULT_HEARTBEAT_TIMEOUT_S
