"""helm/quarry, linted and rendered by Helm's own Go library (helm-python-sdk; no cluster and
no helm binary here) under several value sets; every object validated against the
Kubernetes schemas (kubernetes-validate, strict), and the chart's security promises checked
object by object."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from api.config import Settings
from worker.sandbox import seccomp
from worker.sandbox.kubernetes import SANDBOX_LABELS, KubernetesBackend, KubernetesConfig

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "quarry"
KUBE = "1.31.0"
# Prometheus and Security Profiles operator kinds: no schema to validate against
CRDS = {"monitoring.coreos.com/v1", "security-profiles-operator.x-k8s.io/v1beta1"}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "production": {
        "postgresql": {"enabled": False},
        "redis": {"enabled": False},
        "secrets": {"existingSecret": "quarry-prod"},
        "persistence": {"existingClaim": "quarry-nfs"},
        "image": {"registry": "registry.example.org/quarry", "tag": "1.2.3"},
    },
    "ingress-and-monitoring": {
        "ingress": {"enabled": True, "className": "nginx", "host": "quarry.example.org"},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "worker": {"autoscaling": {"enabled": True}},
        "flower": {"enabled": True},
    },
    "kind": yaml.safe_load((ROOT / "k8s" / "values-kind.yaml").read_text()),
    "seccomp-operator": {"sandbox": {"seccompOperator": True}},
    "own-sandbox-namespace": {
        "sandbox": {"namespace": "snippets", "createNamespace": False},
        "networkPolicies": {"enabled": False},
        "secrets": {"openaiApiKey": "sk-test-not-a-real-key"},
    },
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm_python.Chart.load(CHART)
    try:
        out = chart.render(values, name="quarry", namespace="quarry", is_install=True)
    finally:
        chart.close()
    return [
        doc
        for path, text in sorted(out.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(VALUE_SETS[request.param])


def kinds(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objects:
        name = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] in {"Deployment", "StatefulSet", "Job"}:
            yield name, o["spec"]["template"]["spec"]
        elif o["kind"] == "Pod":
            yield name, o["spec"]


def test_the_chart_lints_clean() -> None:
    for values in VALUE_SETS.values():
        report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBE}")
        assert report["errors"] == []
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_values_are_checked_against_the_schema() -> None:
    chart = helm_python.Chart.load(CHART)
    try:
        with pytest.raises(helm_python.HelmValuesError, match="replicas"):
            chart.validate_schema({"api": {"replicas": 0}})
        with pytest.raises(helm_python.HelmValuesError):
            chart.validate_schema({"unknownKey": True})
    finally:
        chart.close()


def test_every_object_is_valid_kubernetes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    assert objects
    for o in objects:
        if o["apiVersion"] in CRDS:
            continue
        kubernetes_validate.validate(o, KUBE, strict=True)


def test_every_pod_is_locked_down_and_sized(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    for name, spec in pod_specs(objects):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])
            assert c["resources"]["requests"], (name, c["name"])
            assert c["resources"]["limits"], (name, c["name"])
        mounts = {m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
        if not name.startswith(("StatefulSet/quarry-redis", "Pod/")):
            assert "/tmp" in mounts, name  # a writable /tmp on a read-only root


def test_every_folder_a_container_is_told_to_write_to_is_mounted(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """On a read-only root, a path setting with nothing mounted there is a crash at start
    (prometheus-client fails to import when PROMETHEUS_MULTIPROC_DIR does not exist)."""
    _, objects = rendered
    shared = {}
    for o in kinds(objects, "ConfigMap"):
        shared.update(o.get("data") or {})
    told = 0
    for name, spec in pod_specs(objects):
        for c in spec.get("initContainers", []) + spec["containers"]:
            env = {**shared} if c.get("envFrom") else {}
            env.update({e["name"]: e.get("value") for e in c.get("env", [])})
            path = env.get("PROMETHEUS_MULTIPROC_DIR")
            if path:
                told += 1
                mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
                assert path in mounts, (name, c["name"])
    assert told >= 1  # the worker
    # the shared settings name no folder only some pods have
    assert "PROMETHEUS_MULTIPROC_DIR" not in shared


def test_long_running_containers_have_probes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    for o in kinds(objects, "Deployment") + kinds(objects, "StatefulSet"):
        for c in o["spec"]["template"]["spec"]["containers"]:
            assert "livenessProbe" in c, o["metadata"]["name"]
            if o["metadata"]["name"] != "quarry-beat":
                assert "readinessProbe" in c, o["metadata"]["name"]


def test_the_sandbox_network_policy_denies_everything(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    label, objects = rendered
    namespace = (VALUE_SETS[label].get("sandbox") or {}).get("namespace", "quarry-sandbox")
    [policy] = [p for p in kinds(objects, "NetworkPolicy") if p["metadata"]["name"].endswith(
        "sandbox-deny-all"
    )]  # fmt: skip
    assert policy["metadata"]["namespace"] == namespace
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == []
    assert policy["spec"]["egress"] == []
    assert policy["spec"]["podSelector"]["matchLabels"] == SANDBOX_LABELS


def test_the_workers_role_is_narrow(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    label, objects = rendered
    namespace = (VALUE_SETS[label].get("sandbox") or {}).get("namespace", "quarry-sandbox")
    assert kinds(objects, "ClusterRole") == []
    assert kinds(objects, "ClusterRoleBinding") == []
    [role] = kinds(objects, "Role")
    assert role["metadata"]["namespace"] == namespace
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert not any("*" in part for item in granted for part in item)
    assert granted == {
        ("batch", "jobs", "create"), ("batch", "jobs", "delete"), ("batch", "jobs", "list"),
        ("batch", "jobs/status", "get"),
        ("", "configmaps", "create"), ("", "configmaps", "delete"), ("", "configmaps", "patch"),
        ("", "pods", "list"), ("", "pods/log", "get"),
    }  # fmt: skip
    [binding] = kinds(objects, "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "quarry-worker", "namespace": "quarry"}
    ]
    tokens = {
        sa["metadata"]["name"]: sa["automountServiceAccountToken"]
        for sa in kinds(objects, "ServiceAccount")
    }
    assert [name for name, mounted in tokens.items() if mounted] == ["quarry-worker"]


SECRETISH = re.compile(r"PASSWORD|SECRET|_TOKEN$|API_KEY|DATABASE_URL|REDIS_URL", re.I)


def test_secrets_stay_in_secrets(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    label, objects = rendered
    for cm in kinds(objects, "ConfigMap"):
        leaked = [k for k in cm["data"] if SECRETISH.search(k)]
        assert leaked == [], leaked
        assert "sk-test-not-a-real-key" not in yaml.safe_dump(cm)
    for o in objects:
        if o["kind"] != "Secret":
            assert "sk-test-not-a-real-key" not in yaml.safe_dump(o), o["metadata"]["name"]
    existing = VALUE_SETS[label].get("secrets", {}).get("existingSecret")
    secrets = kinds(objects, "Secret")
    if existing:
        assert secrets == []
    else:
        [secret] = secrets
        assert "JWT_SECRET_KEY" in secret["data"]
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    name = existing or "quarry-secrets"
    for workload, spec in pod_specs(objects):
        for c in spec["containers"]:
            refs = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
            assert refs in ([], [name]), workload


def test_migrations_run_as_a_hook_that_api_and_worker_wait_for() -> None:
    objects = render({})
    [job] = kinds(objects, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    assert job["spec"]["activeDeadlineSeconds"] > 0
    assert job["spec"]["backoffLimit"] >= 1
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python", "-m", "api.prestart",
    ]  # fmt: skip
    for name in ("quarry-api", "quarry-worker"):
        [deploy] = [d for d in kinds(objects, "Deployment") if d["metadata"]["name"] == name]
        spec = deploy["spec"]["template"]["spec"]
        assert spec["initContainers"][0]["command"] == ["python", "-m", "api.prestart", "--wait"]
        assert "checksum/config" in deploy["spec"]["template"]["metadata"]["annotations"]


def test_the_backends_job_fits_the_charts_policy_rbac_and_volume(tmp_path: Path) -> None:
    """The Job the kubernetes sandbox backend sends, built from the settings the chart gives
    the worker: the deny-all policy selects its pod, the Role covers its namespace, and its
    volume is the chart's data claim."""
    objects = render({})
    [config] = [c for c in kinds(objects, "ConfigMap") if "SANDBOX_NAMESPACE" in c["data"]]
    env = config["data"]
    backend = KubernetesBackend(
        batch_api=None,  # type: ignore[arg-type]  (only manifests are built here)
        core_api=None,  # type: ignore[arg-type]
        config=KubernetesConfig(
            namespace=env["SANDBOX_NAMESPACE"],
            image=env["SANDBOX_IMAGE"],
            data_claim=env["SANDBOX_DATA_CLAIM"],
            data_dir=str(tmp_path),  # the chart's DATA_DIR (/data), as this test has it
        ),
    )
    assert env["DATA_DIR"] == "/data"
    data = tmp_path / "datasets" / "u" / "d" / "data.arrow"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"arrow")
    job = {
        "code": "df.shape",
        "datasets": [{"name": "df", "path": str(data), "format": "arrow"}],
        "limits": {"timeout_s": 10, "memory_mb": 512, "max_output_bytes": 1 << 20},
    }
    configmap, manifest = backend.manifests(job, "quarry-sandbox-test")
    kubernetes_validate.validate(manifest, KUBE, strict=True)
    kubernetes_validate.validate(configmap, KUBE, strict=True)
    [role] = kinds(objects, "Role")
    assert manifest["metadata"]["namespace"] == role["metadata"]["namespace"]
    assert configmap["metadata"]["namespace"] == role["metadata"]["namespace"]
    [policy] = [p for p in kinds(objects, "NetworkPolicy") if "sandbox" in p["metadata"]["name"]]
    pod_labels = manifest["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    pod = manifest["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    ]
    [pvc] = kinds(objects, "PersistentVolumeClaim")
    assert claims == [pvc["metadata"]["name"]]
    assert env["SANDBOX_IMAGE"] == "quarry-runner:0.1.0"


def test_the_helm_test_checks_readyz() -> None:
    [pod] = kinds(render({}), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "/readyz" in " ".join(pod["spec"]["containers"][0]["command"])


def test_production_values_use_external_services() -> None:
    objects = render(VALUE_SETS["production"])
    assert kinds(objects, "StatefulSet") == []
    assert kinds(objects, "PersistentVolumeClaim") == []
    images = {c["image"] for _, spec in pod_specs(objects) for c in spec["containers"]}
    assert images == {
        "registry.example.org/quarry/quarry-api:1.2.3",
        "registry.example.org/quarry/quarry-worker:1.2.3",
        "registry.example.org/quarry/quarry-frontend:1.2.3",
    }


def test_kind_and_skaffold_fit_the_chart() -> None:
    kind = yaml.safe_load((ROOT / "k8s" / "kind.yaml").read_text())
    mapped = {m["containerPort"]: m["hostPort"] for m in kind["nodes"][0]["extraPortMappings"]}
    values = VALUE_SETS["kind"]
    assert mapped[values["api"]["service"]["nodePort"]] == 8000
    assert mapped[values["frontend"]["service"]["nodePort"]] == 8501
    skaffold = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    artifacts = {a["image"]: a["docker"]["dockerfile"] for a in skaffold["build"]["artifacts"]}
    assert set(artifacts) == {"quarry-api", "quarry-worker", "quarry-frontend", "quarry-runner"}
    assert all((ROOT / path).is_file() for path in artifacts.values())
    [release] = skaffold["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()
    assert release["valuesFiles"] == ["k8s/values-kind.yaml"]


def test_flower_is_optional_and_behind_basic_auth() -> None:
    assert not [d for d in kinds(render({}), "Deployment") if "flower" in d["metadata"]["name"]]
    objects = render({"flower": {"enabled": True}})
    [flower] = [d for d in kinds(objects, "Deployment") if d["metadata"]["name"] == "quarry-flower"]
    [secret] = kinds(objects, "Secret")
    assert "FLOWER_BASIC_AUTH" in secret["data"]
    container = flower["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "quarry-secrets"}} in container["envFrom"]


def test_the_api_trusts_forwarded_addresses_only_from_named_proxies() -> None:
    """X-Forwarded-For from anyone would let a client pick the address that sign-in
    throttling, the logs and the audit trail see."""
    for values, expected in (
        ({}, None),
        ({"api": {"forwardedAllowIps": "10.0.0.0/8"}}, "10.0.0.0/8"),
    ):
        (api,) = [
            o for o in kinds(render(values), "Deployment") if o["metadata"]["name"] == "quarry-api"
        ]
        (container,) = api["spec"]["template"]["spec"]["containers"]
        assert "*" not in container["command"]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert env.get("FORWARDED_ALLOW_IPS") == expected
    dockerfile = (ROOT / "api" / "Dockerfile").read_text()
    assert "--forwarded-allow-ips" not in dockerfile.split("\nCMD", 1)[1]


def _settings(objects: list[dict[str, Any]]) -> dict[str, str]:
    [config] = [c for c in kinds(objects, "ConfigMap") if "SANDBOX_NAMESPACE" in c["data"]]
    return dict(config["data"])


def test_the_chart_ships_the_sandbox_seccomp_profile_as_the_code_defines_it() -> None:
    """files/sandbox-seccomp.json is `python -m worker.sandbox.seccomp`'s output (regenerate
    it when the policy changes), and the chart hands it out unchanged."""
    shipped = (CHART / "files" / "sandbox-seccomp.json").read_text()
    assert shipped == seccomp.profile_json()
    objects = render({})
    [profile] = [
        c for c in kinds(objects, "ConfigMap") if c["metadata"]["name"].endswith("seccomp")
    ]
    assert profile["metadata"]["namespace"] == "quarry-sandbox"
    assert json.loads(profile["data"]["sandbox-seccomp.json"]) == seccomp.docker_profile()
    assert _settings(objects)["SANDBOX_SECCOMP_PROFILE"] == "RuntimeDefault"
    assert kinds(objects, "SeccompProfile") == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, {"type": "RuntimeDefault"}),
        (
            {"sandbox": {"seccompProfile": "Localhost:quarry/sandbox.json"}},
            {"type": "Localhost", "localhostProfile": "quarry/sandbox.json"},
        ),
        (
            {"sandbox": {"seccompOperator": True}},
            {
                "type": "Localhost",
                "localhostProfile": "operator/quarry-sandbox/quarry-sandbox.json",
            },
        ),
    ],
)
def test_sandbox_jobs_use_the_profile_the_chart_names(
    values: dict[str, Any], expected: dict[str, str], tmp_path: Path
) -> None:
    """The worker's setting, from the chart, to the Job the backend sends; with the operator,
    the profile is where it writes its SeccompProfile (operator/<namespace>/<name>.json)."""
    objects = render(values)
    env = _settings(objects)
    settings = Settings(sandbox_seccomp_profile=env["SANDBOX_SECCOMP_PROFILE"])
    backend = KubernetesBackend(
        batch_api=None,  # type: ignore[arg-type]  (only manifests are built here)
        core_api=None,  # type: ignore[arg-type]
        config=KubernetesConfig(
            namespace=env["SANDBOX_NAMESPACE"],
            data_dir=str(tmp_path),
            seccomp_profile=settings.sandbox_seccomp_profile,
        ),
    )
    limits = {"timeout_s": 10, "memory_mb": 512, "max_output_bytes": 1 << 20}
    _, manifest = backend.manifests({"code": "1", "limits": limits}, "quarry-sandbox-seccomp")
    kubernetes_validate.validate(manifest, KUBE, strict=True)
    pod = manifest["spec"]["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"] == expected
    assert pod["containers"][0]["securityContext"]["seccompProfile"] == expected
    if values.get("sandbox", {}).get("seccompOperator"):
        [crd] = kinds(objects, "SeccompProfile")
        assert crd["metadata"]["name"] == "quarry-sandbox"
        assert crd["metadata"]["namespace"] == env["SANDBOX_NAMESPACE"]
        assert crd["spec"] == seccomp.docker_profile()


def test_a_seccomp_profile_setting_that_is_not_one_is_refused() -> None:
    for bad in ("Unconfined", "Localhost:/etc/passwd", "Localhost:", "runtimedefault"):
        with pytest.raises(ValueError, match="sandbox_seccomp_profile"):
            Settings(sandbox_seccomp_profile=bad)


def test_the_sign_in_cookie_is_secure_when_the_ingress_ends_tls() -> None:
    """TLS ends at the ingress, so the UI sees plain HTTP: the chart tells it to mark the
    browser's refresh token cookie Secure all the same (frontend/browser.py)."""

    def frontend_env(values: dict[str, Any]) -> dict[str, str]:
        [deployment] = [
            o
            for o in kinds(render(values), "Deployment")
            if o["metadata"]["name"] == "quarry-frontend"
        ]
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["command"][:3] == ["streamlit", "run", "frontend/server.py"]
        return {e["name"]: e.get("value") for e in container["env"]}

    tls = {
        "ingress": {
            "enabled": True,
            "host": "quarry.example.org",
            "tls": [{"secretName": "quarry-tls", "hosts": ["quarry.example.org"]}],
        }
    }
    assert frontend_env(tls)["QUARRY_COOKIE_SECURE"] == "1"
    assert "QUARRY_COOKIE_SECURE" not in frontend_env({})
