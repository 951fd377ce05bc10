"""The deployment files: the Kubernetes manifests against the Kubernetes schemas (offline, with
``kubernetes-validate``, which carries them), and each recipe against what trackerd does: the
variables it reads, the drain it performs, the probes it answers, the heartbeat it sends, the
source it watches (none: a cloud recipe that defaulted to the demo clip would answer a client
that forgot ``"source": "client"`` with fake ``eye_data``), and where its database lives."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from trackerd import cli
from trackerd.net.access import Access
from trackerd.net.web import Head
from trackerd.settings import (
    DEFAULT_HEARTBEAT_INTERVAL_S,
    DEFAULT_HEARTBEAT_TIMEOUT_S,
    Settings,
)
from trackerd.sources import NO_SOURCE, check_source

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
EXAMPLES = KUBERNETES / "examples"
KUBECTL_SUFFIXES = (".yaml", ".yml", ".json")
"""What ``kubectl apply -f DIR`` reads of a folder: these files of the folder itself, no
subfolder (it recurses only with ``-R``)."""
APPLIED = sorted(p for p in KUBERNETES.iterdir() if p.is_file() and p.suffix in KUBECTL_SUFFIXES)
"""What ``kubectl apply -f deploy/kubernetes/`` applies, as the README says to run it."""
EXAMPLE_MANIFESTS = sorted(EXAMPLES.glob("*.yaml"))
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VALIDATE), "--strict", *map(str, paths)], capture_output=True, text=True, check=False
    )


def test_every_manifest_passes_the_kubernetes_schemas_strictly() -> None:
    """The applied ones and the examples alike: an example that does not validate misleads
    whoever fills it in."""
    assert [p.name for p in APPLIED] == [
        "configmap.yaml",
        "horizontalpodautoscaler.yaml",
        "poddisruptionbudget.yaml",
        "service.yaml",
        "statefulset.yaml",
    ]
    assert [p.name for p in EXAMPLE_MANIFESTS] == ["ingress.yaml", "secret.yaml"]
    result = validate(*APPLIED, *EXAMPLE_MANIFESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_does_refuse_a_wrong_manifest(tmp_path: Path) -> None:
    """So that the test above can fail: a field the schema does not have."""
    wrong = tmp_path / "statefulset.yaml"
    text = (KUBERNETES / "statefulset.yaml").read_text()
    wrong.write_text(text.replace("  replicas: 2", "  replicaz: 2", 1))
    result = validate(wrong)
    assert result.returncode != 0 and "replicaz" in result.stdout + result.stderr


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifest(name: str, folder: Path = KUBERNETES) -> dict[str, Any]:
    (only,) = documents(folder / f"{name}.yaml")
    return only


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = manifest("statefulset")["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (only,) = pod_spec()["containers"]
    found: dict[str, Any] = only
    return found


def example_secret() -> dict[str, Any]:
    return manifest("secret", EXAMPLES)


def environment(*, secret_keys: set[str] | None = None) -> dict[str, str]:
    """A replica's environment: the ConfigMap, the Deployment's env, and the Secret made as the
    example shows (with only ``secret_keys`` of it, when given: the others are missing)."""
    env = dict(manifest("configmap")["data"])
    secret = example_secret()
    for item in container()["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        if secret_keys is None or ref["key"] in secret_keys:
            env[item["name"]] = secret["stringData"][ref["key"]]
        else:
            assert ref.get("optional") is True, f"{item['name']} is needed: the pod would not start"
    return env


def test_kubectl_apply_of_the_folder_applies_no_secret() -> None:
    """``kubectl apply -f deploy/kubernetes/`` used to apply a Secret with a placeholder token,
    over the one the README says to create first. The examples live in a subfolder, which
    kubectl reads only with ``-R``; nothing it does read is a Secret."""
    kinds = [(p.name, d["kind"]) for p in APPLIED for d in documents(p)]
    assert kinds and all(kind != "Secret" for _, kind in kinds), kinds
    assert EXAMPLES.parent == KUBERNETES and EXAMPLES.is_dir()
    assert example_secret()["kind"] == "Secret"
    assert not any(p.suffix in KUBECTL_SUFFIXES for p in KUBERNETES.glob("secret*"))


def test_the_replica_reads_every_key_of_the_example_secret_and_needs_only_the_token() -> None:
    refs = {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in container()["env"]
        if "valueFrom" in item
    }
    assert {r["key"] for r in refs.values()} == set(example_secret()["stringData"])
    assert set(refs) == {
        "TRACKERD_TOKEN",
        "TRACKERD_SIGNING_KEYS",
        "TRACKERD_WEBHOOK_SECRET",
        "TRACKERD_ADMIN_KEY",
    }
    # Without the token a pod must not start, rather than start open to anyone.
    assert refs["TRACKERD_TOKEN"].get("optional") is not True
    assert all(r["optional"] is True for name, r in refs.items() if name != "TRACKERD_TOKEN")


def test_the_replicas_environment_is_settings_trackerd_accepts() -> None:
    """An unknown or misspelt TRACKERD_ variable, or a Secret made as the example shows that
    trackerd refuses, would stop every replica at start-up; so would a Secret with the token
    alone, if the optional keys were not optional."""
    settings = Settings.load({}, environment())
    assert settings.token and settings.keys and settings.admin_key
    assert settings.webhook_secret.startswith("whsec_")
    assert settings.origins == ("https://app.example.com",)
    assert settings.analysis_threads == 1 and settings.max_sessions > 0
    bare = Settings.load({}, environment(secret_keys={"token"}))
    assert bare.token and not bare.keys and not bare.admin_key and not bare.webhook_secret
    # The commented webhook URL, once set, loads with the example's secret beside it.
    configmap = (KUBERNETES / "configmap.yaml").read_text()
    found = re.search(r'^  # (TRACKERD_WEBHOOK_URL): "([^"]+)"$', configmap, re.MULTILINE)
    assert found is not None
    hooked = Settings.load({}, {**environment(), found.group(1): found.group(2)})
    assert hooked.webhook_urls == (found.group(2),)


def test_the_grace_period_outlasts_the_drain() -> None:
    settings = Settings.load({}, environment())
    drain = settings.drain_delay_s + settings.graceful_timeout_s
    assert pod_spec()["terminationGracePeriodSeconds"] >= drain + 2  # and the exit after it
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


def test_the_pod_runs_as_the_images_user_on_a_read_only_root_with_no_kernel_cache() -> None:
    """The kernels are compiled into the image (kernels/build.py): no numba cache to write, so
    none is configured in the pod or the image, and /tmp is the only scratch volume."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = re.search(r"useradd .*--uid (\d+)", dockerfile)
    assert uid is not None
    spec = pod_spec()
    assert spec["securityContext"]["runAsUser"] == int(uid.group(1))
    assert container()["securityContext"]["readOnlyRootFilesystem"] is True
    assert "NUMBA_CACHE_DIR" not in environment()
    assert "NUMBA_CACHE_DIR" not in dockerfile
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


# --- The database: each pod's own, on a volume that outlives the pod --------------------------


def test_each_pod_keeps_its_database_on_a_volume_of_its_own() -> None:
    """The webhook outbox and the reports are a SQLite database under --data-dir. The root
    filesystem is read-only and an emptyDir dies with the pod: the data dir must be a claim
    from the StatefulSet's templates, one per pod, writable by the image's user, on one node's
    disk (SQLite's locks are not safe on ReadWriteMany network file systems)."""
    statefulset = manifest("statefulset")
    data_dir = Settings.load({}, environment()).data_dir
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    assert data_dir in mounts, f"nothing is mounted at the data dir {data_dir}"
    claims = {c["metadata"]["name"]: c["spec"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    claim = claims[mounts[data_dir]]
    assert mounts[data_dir] not in {v["name"] for v in pod_spec()["volumes"]}  # not an emptyDir
    assert claim["accessModes"] == ["ReadWriteOnce"]
    assert claim["resources"]["requests"]["storage"]
    assert pod_spec()["securityContext"]["fsGroup"] == pod_spec()["securityContext"]["runAsUser"]
    # A pod scaled away keeps its undelivered events, for when it comes back.
    retention = statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert retention == {"whenScaled": "Retain", "whenDeleted": "Retain"}


def test_the_autoscaler_and_the_disruption_budget_hold_the_statefulset() -> None:
    statefulset = manifest("statefulset")
    target = manifest("horizontalpodautoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", statefulset["metadata"]["name"])
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    for name in ("poddisruptionbudget", "service"):
        spec = manifest(name)["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        assert selector.items() <= labels.items(), name
    assert statefulset["spec"]["serviceName"] == manifest("service")["metadata"]["name"]


def test_the_image_keeps_its_database_on_a_volume_its_user_can_write() -> None:
    env = dockerfile_env()
    data_dir = env["TRACKERD_DATA_DIR"]
    (volume,) = [json.loads(rest) for keyword, rest in dockerfile() if keyword == "VOLUME"]
    assert data_dir in volume
    (setup,) = [rest for keyword, rest in dockerfile() if keyword == "RUN" and "useradd" in rest]
    assert re.search(rf"mkdir -p [^&]*{re.escape(data_dir)}\b", setup)
    assert re.search(rf"chown trackerd [^&]*{re.escape(data_dir)}\b", setup)
    # A new volume starts as a copy of the image's directory, owner included; a build step
    # that changes the directory after VOLUME is discarded.
    steps = dockerfile()
    assert steps.index(("RUN", setup)) < [keyword for keyword, _ in steps].index("VOLUME")


# --- No recipe defaults to the demo clip --------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), as Docker reads them: continuation
    lines joined, comment lines dropped (also those inside a continuation)."""
    instructions, current = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1]
            continue
        current += line
        if current.strip():
            keyword, _, rest = current.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in dockerfile():
        if keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def settings_for(argv: list[str], environ: dict[str, str]) -> Settings:
    """What ``trackerd ARGV`` would run with in ``environ``."""
    return Settings.load(vars(cli.parser().parse_args(argv)), environ)


def procfile_argv(environ: dict[str, str]) -> list[str]:
    """The Procfile's web command's words once the shell Heroku runs it with has expanded
    them in ``environ``."""
    (web,) = [
        line.removeprefix("web:").strip()
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.startswith("web:")
    ]
    done = subprocess.run(
        ["bash", "-c", f'set -- {web}; printf "%s\\0" "$@"'],
        env={"PATH": os.environ["PATH"], **environ},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split("\0")[:-1]


def test_the_image_serves_push_sessions_only_unless_trackerd_source_says_otherwise() -> None:
    """Railway and Render build the Dockerfile: its CMD and ENV decide the source."""
    ((cmd,),) = [[json.loads(rest)] for keyword, rest in dockerfile() if keyword == "CMD"]
    assert cmd[0] == "trackerd"
    env = dockerfile_env()
    assert settings_for(cmd[1:], env).source == NO_SOURCE
    # The README tells a user to set TRACKERD_SOURCE to watch something: a --source in CMD
    # would beat it.
    chosen = {**env, "TRACKERD_SOURCE": "demo"}
    assert settings_for(cmd[1:], chosen).source == "demo"


def test_the_procfile_serves_push_sessions_only_unless_trackerd_source_says_otherwise() -> None:
    plain = procfile_argv({})
    assert plain[0] == "trackerd"
    settings = settings_for(plain[1:], {})
    assert (settings.source, settings.host) == (NO_SOURCE, "0.0.0.0")
    chosen = procfile_argv({"TRACKERD_SOURCE": "rtsp://camera/live"})
    assert settings_for(chosen[1:], {}).source == "rtsp://camera/live"


def test_the_kubernetes_replicas_serve_push_sessions_only() -> None:
    assert Settings.load({}, environment()).source == NO_SOURCE


def test_the_render_recipe_in_the_docs_serves_push_sessions_only() -> None:
    """Render's Python runtime runs the start command docs/operations.md gives."""
    readme = (ROOT / "docs" / "operations.md").read_text()
    render = readme.split("### Render", 1)[1].split("\n### ", 1)[0]
    (command,) = re.findall(r"start\s+command\s+`([^`]+)`", render)
    argv = shlex.split(command)
    assert argv[0] == "trackerd"
    settings = settings_for(argv[1:], {})
    assert (settings.source, settings.host) == (NO_SOURCE, "0.0.0.0")


def test_push_only_is_a_source_trackerd_accepts_and_not_the_laptops_default() -> None:
    """The recipes' ``none`` passes the check the server makes before it listens; a plain
    ``trackerd`` on a laptop still watches its camera."""
    check_source(NO_SOURCE)
    assert Settings.load({}, {}).source != NO_SOURCE


# --- In front: nginx, and the Ingress example -----------------------------------------------------


@pytest.mark.parametrize("directive", ["proxy_read_timeout", "proxy_send_timeout"])
def test_nginx_keeps_a_quiet_client_longer_than_the_heartbeat_takes_to_drop_a_dead_one(
    directive: str,
) -> None:
    conf = (ROOT / "deploy" / "nginx" / "trackerd.conf").read_text()
    found = re.search(rf"^\s*{directive} (\d+)s;", conf, re.MULTILINE)
    assert found is not None
    assert int(found.group(1)) > DEFAULT_HEARTBEAT_INTERVAL_S + DEFAULT_HEARTBEAT_TIMEOUT_S


def test_the_ingress_example_keeps_websockets_open_over_tls_to_the_service() -> None:
    ingress = manifest("ingress", EXAMPLES)
    annotations = ingress["metadata"]["annotations"]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        seconds = int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"])
        assert seconds > DEFAULT_HEARTBEAT_INTERVAL_S + DEFAULT_HEARTBEAT_TIMEOUT_S, timeout
    spec = ingress["spec"]
    ((rule,),) = [spec["rules"]]
    (tls,) = spec["tls"]
    assert tls["secretName"] and tls["hosts"] == [rule["host"]]
    # The host the ingress answers for is the one the replicas let in (421 otherwise).
    assert Settings.load({}, environment()).hosts == (rule["host"],)
    (path,) = rule["http"]["paths"]
    service = manifest("service")
    backend = path["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
