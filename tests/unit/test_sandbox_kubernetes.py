"""The kubernetes sandbox backend, without a cluster.

No Kubernetes API server exists on the machines these tests run on. So: the manifests are
compared whole and EVERY manifest the backend builds is validated against the Kubernetes
schemas with `kubernetes-validate` (strict: unknown fields fail), for a fixed Kubernetes
version; and the wait/cleanup logic is driven by SCRIPTED API answers (fake BatchV1Api and
CoreV1Api objects returning the client's real model objects, and a fake clock). The
real-cluster lane is tests/e2e/test_sandbox_engines.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
from kubernetes.client import (
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateTerminated,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1Job,
    V1JobCondition,
    V1JobStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodCondition,
    V1PodList,
    V1PodStatus,
)
from kubernetes.client.exceptions import ApiException

from api.config import Settings
from worker.sandbox import SandboxUnavailable, get_backend
from worker.sandbox.kubernetes import (
    JOB_LABEL,
    SANDBOX_LABELS,
    KubernetesBackend,
    KubernetesConfig,
    make_configmap,
    make_job,
    owner_reference,
    plan_files,
    result_from_log,
)

# The Kubernetes version the manifests are validated against (the chart's target).
KUBERNETES_VERSION = "1.30"
GOOD = {"ok": True, "stdout": "", "error": None, "result": "42", "tables": [], "figures": []}
LIMITS = {"timeout_s": 5, "memory_mb": 512, "max_output_bytes": 1 << 20}
NAME = "quarry-sandbox-0123456789ab"


def validate(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


# --- scripted API ------------------------------------------------------------------------------
class Clock:
    """The injected timer and sleeper: sleeping moves the time on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def timer(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedApi:
    """Stands in for a kubernetes API class: each method answers from its script (an
    exception in it is raised; the last answer repeats) and every call is recorded."""

    def __init__(self, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> None:
        self.calls = calls
        self.scripts: dict[str, list[Any]] = {}

    def script(self, method: str, *answers: Any) -> None:
        self.scripts[method] = list(answers)

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((method, args, kwargs))
            answers = self.scripts.get(method)
            if not answers:
                return None
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
            if isinstance(answer, BaseException):
                raise answer
            return answer

        return call


def api_error(status: int, reason: str = "") -> ApiException:
    error = ApiException(status=status, reason=reason or f"status {status}")
    error.body = json.dumps({"message": f"scripted {status}"})
    return error


def pod(
    phase: str = "Pending",
    *,
    scheduled: tuple[str, str, str] | None = None,
    waiting: tuple[str, str] | None = None,
    running: bool = False,
    terminated: tuple[int, str] | None = None,
    reason: str | None = None,
) -> V1PodList:
    """A one-pod list as `list_namespaced_pod` answers it."""
    conditions = []
    if scheduled is not None:
        status, why, message = scheduled
        conditions.append(
            V1PodCondition(type="PodScheduled", status=status, reason=why, message=message)
        )
    statuses = None
    if waiting or running or terminated:
        state = V1ContainerState(
            waiting=V1ContainerStateWaiting(reason=waiting[0], message=waiting[1])
            if waiting
            else None,
            running=V1ContainerStateRunning() if running else None,
            terminated=V1ContainerStateTerminated(exit_code=terminated[0], reason=terminated[1])
            if terminated
            else None,
        )
        statuses = [
            V1ContainerStatus(
                name="runner",
                image="quarry-runner:test",
                image_id="",
                ready=running,
                restart_count=0,
                state=state,
            )
        ]
    item = V1Pod(
        metadata=V1ObjectMeta(name=f"{NAME}-x7k2p"),
        status=V1PodStatus(
            phase=phase, conditions=conditions, container_statuses=statuses, reason=reason
        ),
    )
    return V1PodList(items=[item])


NO_POD = V1PodList(items=[])
SCHEDULED = ("True", "", "")
DONE = pod("Succeeded", scheduled=SCHEDULED, terminated=(0, "Completed"))


def job_status(*conditions: tuple[str, str, str]) -> V1Job:
    return V1Job(
        status=V1JobStatus(
            conditions=[
                V1JobCondition(type=kind, status="True", reason=reason, message=message)
                for kind, reason, message in conditions
            ]
        )
    )


class Cluster:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.batch = ScriptedApi(self.calls)
        self.core = ScriptedApi(self.calls)
        self.clock = Clock()
        self.batch.script("create_namespaced_job", V1Job(metadata=V1ObjectMeta(uid="job-uid-1")))
        self.batch.script("read_namespaced_job_status", job_status())
        self.core.script("read_namespaced_pod_log", log(GOOD))

    def methods(self) -> list[str]:
        return [method for method, _, _ in self.calls]

    def called(self, method: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(args, kwargs) for name, args, kwargs in self.calls if name == method]

    def assert_cleaned_up(self) -> None:
        jobs = self.called("delete_namespaced_job")
        maps = self.called("delete_namespaced_config_map")
        assert jobs
        assert maps
        assert jobs[-1][1]["propagation_policy"] == "Background"
        assert jobs[-1][0][1] == maps[-1][0][1] == "quarry-sandbox"
        assert jobs[-1][0][0] == maps[-1][0][0]
        assert self.methods()[-2:] == ["delete_namespaced_job", "delete_namespaced_config_map"]


def log(result: dict[str, Any] | bytes) -> SimpleNamespace:
    """What `read_namespaced_pod_log(..., _preload_content=False)` answers: a raw response."""
    data = result if isinstance(result, bytes) else json.dumps(result).encode()
    return SimpleNamespace(data=data)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "users" / "u1").mkdir(parents=True)
    (root / "users" / "u1" / "sales.arrow").write_bytes(b"ARROW1")
    (root / "users" / "u1" / "young.arrow").write_bytes(b"ARROW1")
    return root


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


def make_backend(cluster: Cluster, data_dir: Path, **config: Any) -> KubernetesBackend:
    defaults: dict[str, Any] = {
        "namespace": "quarry-sandbox",
        "image": "quarry-runner:test",
        "data_dir": str(data_dir),
        "schedule_timeout_s": 30.0,
        "startup_timeout_s": 60.0,
        "start_grace_s": 10.0,
        "limits": LIMITS,
    }
    return KubernetesBackend(
        cluster.batch,  # type: ignore[arg-type]
        cluster.core,  # type: ignore[arg-type]
        sleeper=cluster.clock.sleep,
        timer=cluster.clock.timer,
        config=KubernetesConfig(**{**defaults, **config}),
    )


def a_job(data_dir: Path) -> dict[str, Any]:
    return {
        "code": "df.groupby('a').size()",
        "datasets": [
            {"name": "df", "path": str(data_dir / "users/u1/sales.arrow"), "format": "arrow"}
        ],
        "workspace": [
            {"name": "young", "path": str(data_dir / "users/u1/young.arrow"), "kind": "dataframe"}
        ],
        "limits": LIMITS,
    }


# --- manifests ---------------------------------------------------------------------------------
EXPECTED_LABELS = {
    "app.kubernetes.io/name": "quarry",
    "app.kubernetes.io/managed-by": "quarry-worker",
    "app.kubernetes.io/component": "sandbox",
    "quarry.dev/sandbox": "true",
    "quarry.dev/sandbox-job": NAME,
}


def test_the_job_manifest_whole(data_dir: Path, cluster: Cluster) -> None:
    configmap, job = make_backend(cluster, data_dir).manifests(a_job(data_dir), NAME)
    assert job == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": NAME, "namespace": "quarry-sandbox", "labels": EXPECTED_LABELS},
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": 105,  # schedule 30 + startup 60 + run 5 + grace 10
            "ttlSecondsAfterFinished": 300,
            "template": {
                "metadata": {"labels": EXPECTED_LABELS},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 0,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "runner",
                            "image": "quarry-runner:test",
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["python", "-m", "runner"],
                            "args": ["--job-file", "/job/input/job.json"],
                            "workingDir": "/tmp",
                            "env": [
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "PYTHONWARNINGS", "value": "ignore"},
                                {"name": "OMP_NUM_THREADS", "value": "1"},
                                {"name": "OPENBLAS_NUM_THREADS", "value": "1"},
                                {"name": "MKL_NUM_THREADS", "value": "1"},
                            ],
                            "resources": {
                                "requests": {"cpu": "1000m", "memory": "512Mi"},
                                "limits": {"cpu": "1000m", "memory": "512Mi"},
                            },
                            "securityContext": {
                                "runAsNonRoot": True,
                                "runAsUser": 10001,
                                "runAsGroup": 10001,
                                "readOnlyRootFilesystem": True,
                                "allowPrivilegeEscalation": False,
                                "privileged": False,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "volumeMounts": [
                                {"name": "job", "mountPath": "/job/input", "readOnly": True},
                                {"name": "tmp", "mountPath": "/tmp"},
                                {
                                    "name": "data",
                                    "mountPath": "/job/dataset-0",
                                    "subPath": "users/u1/sales.arrow",
                                    "readOnly": True,
                                },
                                {
                                    "name": "data",
                                    "mountPath": "/job/workspace-0",
                                    "subPath": "users/u1/young.arrow",
                                    "readOnly": True,
                                },
                            ],
                            "terminationMessagePolicy": "File",
                        }
                    ],
                    "volumes": [
                        {
                            "name": "job",
                            "configMap": {
                                "name": NAME,
                                "items": [{"key": "job.json", "path": "job.json"}],
                                "defaultMode": 0o444,
                            },
                        },
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                        {
                            "name": "data",
                            "persistentVolumeClaim": {"claimName": "quarry-data", "readOnly": True},
                        },
                    ],
                },
            },
        },
    }
    sent = json.loads(configmap["data"]["job.json"])
    assert configmap == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": NAME, "namespace": "quarry-sandbox", "labels": EXPECTED_LABELS},
        "immutable": True,
        "data": {"job.json": configmap["data"]["job.json"]},
    }
    assert sent == {
        "code": "df.groupby('a').size()",
        "datasets": [{"name": "df", "path": "/job/dataset-0", "format": "arrow"}],
        "workspace": [{"name": "young", "path": "/job/workspace-0", "kind": "dataframe"}],
        "limits": LIMITS,
    }


def test_the_network_policy_labels_are_on_every_pod(data_dir: Path, cluster: Cluster) -> None:
    _, job = make_backend(cluster, data_dir).manifests(a_job(data_dir), NAME)
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert SANDBOX_LABELS == {
        "app.kubernetes.io/component": "sandbox",
        "quarry.dev/sandbox": "true",
    }
    assert SANDBOX_LABELS.items() <= labels.items()


def every_manifest(data_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    common: dict[str, Any] = {
        "image": "quarry-runner:test",
        "memory_mb": 1024,
        "cpus": 0.5,
        "data_claim": "quarry-data",
        "active_deadline_s": 220,
        "ttl_after_finished_s": 300,
    }
    files = [("users/u1/a.arrow", "/job/dataset-0"), ("users/u1/b.json", "/job/workspace-0")]
    owner = owner_reference(NAME, "6f1c7c2e-2f6b-4d0e-9d7e-6d3f1f5c0a11")
    return [
        ("job with files", make_job(NAME, "ns", files=files, **common)),
        ("job without files", make_job(NAME, "ns", files=[], **common)),
        (
            "job with a runtime class",
            make_job(
                NAME,
                "ns",
                files=files,
                runtime_class_name="gvisor",
                image_pull_policy="Always",
                tmp_mb=16,
                **common,
            ),
        ),
        ("configmap", make_configmap(NAME, "ns", "{}")),
        ("configmap owned by its job", make_configmap(NAME, "ns", "{}", owner)),
    ]


@pytest.mark.parametrize("index", range(5))
def test_every_manifest_is_valid_kubernetes(data_dir: Path, index: int) -> None:
    _, manifest = every_manifest(data_dir)[index]
    validate(manifest)


def test_what_the_backend_sends_is_valid_kubernetes(data_dir: Path, cluster: Cluster) -> None:
    cluster.core.script("list_namespaced_pod", DONE)
    make_backend(cluster, data_dir).run(a_job(data_dir))

    [(cm_args, _)] = cluster.called("create_namespaced_config_map")
    [(job_args, _)] = cluster.called("create_namespaced_job")
    [(patch_args, _)] = cluster.called("patch_namespaced_config_map")
    configmap, job = cm_args[1], job_args[1]
    validate(configmap)
    validate(job)
    # The ConfigMap as it is after the patch: owned by the Job.
    owned = {**configmap, "metadata": {**configmap["metadata"], **patch_args[2]["metadata"]}}
    validate(owned)
    assert owned["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": job["metadata"]["name"],
            "uid": "job-uid-1",
        }
    ]


def test_the_validation_is_strict(data_dir: Path) -> None:
    """A misspelt field or a wrong type fails: the check above means something."""
    _, job = every_manifest(data_dir)[0]
    misspelt = {**job, "spec": {**job["spec"], "backofLimit": 0}}
    with pytest.raises(kubernetes_validate.ValidationError, match="backofLimit"):
        validate(misspelt)
    spec = job["spec"]["template"]["spec"]
    wrong = {**spec, "securityContext": {**spec["securityContext"], "runAsUser": "10001"}}
    bad = {**job, "spec": {**job["spec"], "template": {"spec": wrong}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad)


def test_a_file_s_sub_path_is_its_path_in_the_data_dir(data_dir: Path) -> None:
    job = a_job(data_dir)
    _, files = plan_files(job, str(data_dir))
    assert files == [
        ("users/u1/sales.arrow", "/job/dataset-0"),
        ("users/u1/young.arrow", "/job/workspace-0"),
    ]


def test_paths_outside_the_data_dir_are_refused(
    data_dir: Path, cluster: Cluster, tmp_path: Path
) -> None:
    backend = make_backend(cluster, data_dir)
    for path in ("/etc/passwd", str(data_dir / "../secret.csv"), str(data_dir)):
        job = {"code": "1", "datasets": [{"name": "df", "path": path, "format": "csv"}]}
        result = backend.run(job)
        assert result["error"]["type"] == "JobError", path
    (tmp_path / "outside.csv").write_text("a\n1\n")
    (data_dir / "users" / "u1" / "link.csv").symlink_to(tmp_path / "outside.csv")
    job = {"code": "1", "datasets": [{"name": "df", "path": str(data_dir / "users/u1/link.csv")}]}
    assert backend.run(job)["error"]["type"] == "JobError"
    missing = {"code": "1", "datasets": [{"name": "df", "path": str(data_dir / "nope.csv")}]}
    assert backend.run(missing)["error"]["message"].endswith("df: no such file")
    assert cluster.calls == []


def test_a_job_too_big_for_a_configmap_is_refused(data_dir: Path, cluster: Cluster) -> None:
    result = make_backend(cluster, data_dir).run({"code": "x = 1\n" * 200_000})
    assert result["error"]["type"] == "JobError"
    assert cluster.calls == []


# --- waiting and cleaning up ---------------------------------------------------------------------
def test_the_success_path_reads_the_pod_log(data_dir: Path, cluster: Cluster) -> None:
    cluster.core.script(
        "list_namespaced_pod",
        NO_POD,
        pod(),
        pod(scheduled=SCHEDULED, waiting=("ContainerCreating", "")),
        pod("Running", scheduled=SCHEDULED, running=True),
        DONE,
    )
    result = make_backend(cluster, data_dir).run(a_job(data_dir))

    assert result["ok"] is True
    assert result["result"] == "42"
    assert result["duration_ms"] == int(sum(cluster.clock.sleeps) * 1000)
    methods = cluster.methods()
    assert methods[:3] == [
        "create_namespaced_config_map",
        "create_namespaced_job",
        "patch_namespaced_config_map",
    ]
    [(args, kwargs)] = cluster.called("read_namespaced_pod_log")
    assert args == (f"{NAME}-x7k2p", "quarry-sandbox")
    assert kwargs["container"] == "runner"
    assert kwargs["_preload_content"] is False  # raw bytes, never the client's "deserializing"
    assert kwargs["limit_bytes"] == LIMITS["max_output_bytes"] + (64 << 10) + 1
    name = cluster.called("create_namespaced_job")[0][0][1]["metadata"]["name"]
    for args, kwargs in cluster.called("list_namespaced_pod"):
        assert args == ("quarry-sandbox",)
        assert kwargs["label_selector"] == f"{JOB_LABEL}={name}"
    # Polls back off, up to a cap.
    assert cluster.clock.sleeps == pytest.approx([0.1, 0.15, 0.225, 0.3375])
    assert all(kwargs["_request_timeout"] == 30.0 for _, _, kwargs in cluster.calls)
    cluster.assert_cleaned_up()


def test_the_poll_interval_is_capped(data_dir: Path, cluster: Cluster) -> None:
    running = pod("Running", scheduled=SCHEDULED, running=True)
    cluster.core.script("list_namespaced_pod", *([running] * 12), DONE)
    make_backend(cluster, data_dir, poll_max_s=0.5).run(a_job(data_dir))

    assert max(cluster.clock.sleeps) == 0.5
    assert cluster.clock.sleeps[-3:] == [0.5, 0.5, 0.5]


def test_the_result_is_found_among_stderr_lines(data_dir: Path, cluster: Cluster) -> None:
    cluster.core.script("list_namespaced_pod", DONE)
    noisy = b"some warning on stderr\nanother {one}\n" + json.dumps(GOOD).encode() + b"\n"
    cluster.core.script("read_namespaced_pod_log", log(noisy))

    assert make_backend(cluster, data_dir).run(a_job(data_dir))["result"] == "42"
    assert result_from_log(b"no result here\n{not json")["error"]["type"] == "SandboxError"


def test_an_image_pull_error_fails_fast(data_dir: Path, cluster: Cluster) -> None:
    cluster.core.script(
        "list_namespaced_pod",
        pod(scheduled=SCHEDULED, waiting=("ContainerCreating", "")),
        pod(scheduled=SCHEDULED, waiting=("ErrImagePull", 'pull access denied for "nope"')),
    )
    with pytest.raises(SandboxUnavailable, match=r"cannot start: ErrImagePull: pull access denied"):
        make_backend(cluster, data_dir).run(a_job(data_dir))

    assert len(cluster.called("list_namespaced_pod")) == 2
    assert cluster.clock.now < 1
    cluster.assert_cleaned_up()


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "InvalidImageName"])
def test_other_image_errors_fail_fast_too(data_dir: Path, cluster: Cluster, reason: str) -> None:
    cluster.core.script("list_namespaced_pod", pod(scheduled=SCHEDULED, waiting=(reason, "x")))
    with pytest.raises(SandboxUnavailable, match=reason):
        make_backend(cluster, data_dir).run(a_job(data_dir))
    cluster.assert_cleaned_up()


def test_an_unschedulable_pod_fails_after_the_schedule_timeout(
    data_dir: Path, cluster: Cluster
) -> None:
    unschedulable = (
        "False",
        "Unschedulable",
        "0/3 nodes are available: 3 Insufficient memory.",
    )
    cluster.core.script("list_namespaced_pod", pod(scheduled=unschedulable))
    with pytest.raises(SandboxUnavailable) as raised:
        make_backend(cluster, data_dir).run(a_job(data_dir))

    message = str(raised.value)
    assert "could not be scheduled within 30 s" in message
    assert "Unschedulable: 0/3 nodes are available: 3 Insufficient memory." in message
    assert 30 < cluster.clock.now <= 31  # the schedule timeout, not the run's or the startup's
    cluster.assert_cleaned_up()


def test_a_pod_never_created_fails_after_the_schedule_timeout(
    data_dir: Path, cluster: Cluster
) -> None:
    """E.g. a ResourceQuota refusing the pod: the Job exists, its pod never does."""
    cluster.core.script("list_namespaced_pod", NO_POD)
    with pytest.raises(SandboxUnavailable, match="could not be scheduled within 30 s"):
        make_backend(cluster, data_dir).run(a_job(data_dir))
    cluster.assert_cleaned_up()


def test_a_scheduled_pod_that_does_not_start_fails_after_the_startup_timeout(
    data_dir: Path, cluster: Cluster
) -> None:
    cluster.core.script(
        "list_namespaced_pod", pod(scheduled=SCHEDULED, waiting=("ContainerCreating", ""))
    )
    with pytest.raises(SandboxUnavailable, match="did not start within 60 s"):
        make_backend(cluster, data_dir).run(a_job(data_dir))

    assert 60 < cluster.clock.now <= 61
    cluster.assert_cleaned_up()


def test_the_run_deadline_is_a_timeout_error(data_dir: Path, cluster: Cluster) -> None:
    cluster.core.script(
        "list_namespaced_pod", pod(), pod("Running", scheduled=SCHEDULED, running=True)
    )
    result = make_backend(cluster, data_dir).run(a_job(data_dir))

    assert result["ok"] is False
    assert result["error"]["type"] == "TimeoutError"
    assert "5 s" in result["error"]["message"]
    assert 15 < cluster.clock.now <= 16.2  # timeout_s + grace after it started running
    assert cluster.called("read_namespaced_pod_log") == []
    cluster.assert_cleaned_up()


def test_the_job_deadline_is_a_timeout_error(data_dir: Path, cluster: Cluster) -> None:
    cluster.core.script("list_namespaced_pod", NO_POD)
    cluster.batch.script(
        "read_namespaced_job_status",
        job_status(("Failed", "DeadlineExceeded", "Job was active longer than specified")),
    )
    result = make_backend(cluster, data_dir).run(a_job(data_dir))
    assert result["error"]["type"] == "TimeoutError"

    cluster.core.script("list_namespaced_pod", pod("Failed", reason="DeadlineExceeded"))
    assert make_backend(cluster, data_dir).run(a_job(data_dir))["error"]["type"] == "TimeoutError"


def test_a_job_that_failed_otherwise_says_why(data_dir: Path, cluster: Cluster) -> None:
    cluster.core.script("list_namespaced_pod", NO_POD)
    cluster.batch.script(
        "read_namespaced_job_status",
        job_status(("Failed", "PodFailurePolicy", "the pod was evicted")),
    )
    result = make_backend(cluster, data_dir).run(a_job(data_dir))
    assert result["error"]["type"] == "SandboxError"
    assert "the pod was evicted" in result["error"]["message"]


def test_out_of_memory_is_reported_as_such(data_dir: Path, cluster: Cluster) -> None:
    cluster.core.script(
        "list_namespaced_pod", pod("Failed", scheduled=SCHEDULED, terminated=(137, "OOMKilled"))
    )
    result = make_backend(cluster, data_dir).run(a_job(data_dir))

    assert result["error"]["type"] == "MemoryError"
    assert "512 MB" in result["error"]["message"]
    cluster.assert_cleaned_up()


def test_output_over_the_cap_is_refused(data_dir: Path, cluster: Cluster) -> None:
    cluster.core.script("list_namespaced_pod", DONE)
    cluster.core.script("read_namespaced_pod_log", log(b"x" * ((1 << 20) + (64 << 10) + 1)))
    result = make_backend(cluster, data_dir).run(a_job(data_dir))
    assert result["error"]["type"] == "OutputTooLarge"


def test_a_pod_that_ended_without_output_crashed(data_dir: Path, cluster: Cluster) -> None:
    cluster.core.script("list_namespaced_pod", pod("Failed", terminated=(139, "Error")))
    cluster.core.script("read_namespaced_pod_log", log(b""))
    result = make_backend(cluster, data_dir).run(a_job(data_dir))
    assert result["error"]["type"] == "SandboxCrashed"
    assert "exit code 139" in result["error"]["message"]


def test_an_unreadable_log_is_a_failure(data_dir: Path, cluster: Cluster) -> None:
    cluster.core.script("list_namespaced_pod", DONE)
    cluster.core.script("read_namespaced_pod_log", api_error(404, "Not Found"))
    result = make_backend(cluster, data_dir).run(a_job(data_dir))
    assert result["error"]["type"] == "SandboxError"
    cluster.assert_cleaned_up()


def test_5xx_answers_are_retried(data_dir: Path, cluster: Cluster) -> None:
    cluster.batch.script(
        "create_namespaced_job",
        api_error(503, "Service Unavailable"),
        api_error(500, "Internal Server Error"),
        V1Job(metadata=V1ObjectMeta(uid="job-uid-1")),
    )
    cluster.core.script("list_namespaced_pod", api_error(502, "Bad Gateway"), DONE)
    result = make_backend(cluster, data_dir).run(a_job(data_dir))

    assert result["ok"] is True
    assert len(cluster.called("create_namespaced_job")) == 3
    assert cluster.clock.sleeps[:2] == [0.2, 0.4]  # the retries' own backoff
    cluster.assert_cleaned_up()


def test_5xx_retries_give_up(data_dir: Path, cluster: Cluster) -> None:
    cluster.batch.script("create_namespaced_job", api_error(503))
    with pytest.raises(SandboxUnavailable, match="503"):
        make_backend(cluster, data_dir).run(a_job(data_dir))
    assert len(cluster.called("create_namespaced_job")) == 3


def test_4xx_answers_are_not_retried(data_dir: Path, cluster: Cluster) -> None:
    cluster.batch.script("create_namespaced_job", api_error(403, "Forbidden"))
    cluster.batch.script("delete_namespaced_job", api_error(404, "Not Found"))
    with pytest.raises(SandboxUnavailable, match=r"403 Forbidden\): scripted 403"):
        make_backend(cluster, data_dir).run(a_job(data_dir))

    assert len(cluster.called("create_namespaced_job")) == 1
    assert cluster.clock.sleeps == []
    cluster.assert_cleaned_up()  # the ConfigMap it did create goes too


def test_a_4xx_while_waiting_is_a_failure_and_cleans_up(data_dir: Path, cluster: Cluster) -> None:
    cluster.core.script("list_namespaced_pod", api_error(403, "Forbidden"))
    result = make_backend(cluster, data_dir).run(a_job(data_dir))

    assert result["error"]["type"] == "SandboxError"
    assert len(cluster.called("list_namespaced_pod")) == 1
    cluster.assert_cleaned_up()


def test_a_404_on_delete_means_already_gone(data_dir: Path, cluster: Cluster) -> None:
    cluster.core.script("list_namespaced_pod", DONE)
    cluster.batch.script("delete_namespaced_job", api_error(404, "Not Found"))
    cluster.core.script("delete_namespaced_config_map", api_error(404, "Not Found"))
    result = make_backend(cluster, data_dir).run(a_job(data_dir))

    assert result["ok"] is True
    assert len(cluster.called("delete_namespaced_job")) == 1
    cluster.assert_cleaned_up()


def test_deletes_are_retried_and_failures_do_not_hide_the_result(
    data_dir: Path, cluster: Cluster
) -> None:
    cluster.core.script("list_namespaced_pod", DONE)
    cluster.batch.script("delete_namespaced_job", api_error(500), None)
    cluster.core.script("delete_namespaced_config_map", api_error(403, "Forbidden"))
    result = make_backend(cluster, data_dir).run(a_job(data_dir))

    assert result["ok"] is True
    assert len(cluster.called("delete_namespaced_job")) == 2
    assert len(cluster.called("delete_namespaced_config_map")) == 1


def test_an_unreachable_api_is_sandbox_unavailable(data_dir: Path, cluster: Cluster) -> None:
    cluster.core.script("create_namespaced_config_map", ConnectionRefusedError("refused"))
    with pytest.raises(SandboxUnavailable, match="unreachable"):
        make_backend(cluster, data_dir).run(a_job(data_dir))


def test_an_ownership_patch_that_fails_is_not_fatal(data_dir: Path, cluster: Cluster) -> None:
    cluster.core.script("patch_namespaced_config_map", api_error(403, "Forbidden"))
    cluster.core.script("list_namespaced_pod", DONE)
    assert make_backend(cluster, data_dir).run(a_job(data_dir))["ok"] is True
    cluster.assert_cleaned_up()


def test_the_job_and_configmap_go_when_the_worker_is_interrupted(
    data_dir: Path, cluster: Cluster
) -> None:
    """A Celery soft time limit (or any exception) raised mid-wait still deletes both."""

    class SoftTimeLimitExceeded(Exception):
        pass

    cluster.core.script("list_namespaced_pod", pod(), SoftTimeLimitExceeded())
    with pytest.raises(SoftTimeLimitExceeded):
        make_backend(cluster, data_dir).run(a_job(data_dir))
    cluster.assert_cleaned_up()


def test_close_deletes_what_is_still_running(data_dir: Path, cluster: Cluster) -> None:
    backend = make_backend(cluster, data_dir)
    running = pod("Running", scheduled=SCHEDULED, running=True)

    def shut_down(seconds: float) -> None:
        cluster.clock.sleep(seconds)
        if len(cluster.clock.sleeps) == 1:
            backend.close()  # the worker stops while the snippet runs

    backend._sleep = shut_down
    cluster.core.script("list_namespaced_pod", running, DONE)
    backend.run(a_job(data_dir))

    assert len(cluster.called("delete_namespaced_job")) == 2


def test_health(data_dir: Path, cluster: Cluster) -> None:
    backend = make_backend(cluster, data_dir)
    assert backend.health() == {
        "backend": "kubernetes",
        "namespace": "quarry-sandbox",
        "image": "quarry-runner:test",
        "ok": True,
    }
    cluster.batch.script("list_namespaced_job", api_error(403, "Forbidden"))
    assert backend.health()["ok"] is False


def test_from_settings_without_a_cluster_is_sandbox_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, sandbox_backend="kubernetes"
    )
    with pytest.raises(SandboxUnavailable, match="No Kubernetes cluster is configured"):
        get_backend(settings)


def test_from_settings_with_a_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path,
        sandbox_namespace="sbx",
        sandbox_image="quarry-runner:9",
        sandbox_memory_mb=256,
    )
    backend = get_backend(settings, "kubernetes")

    assert isinstance(backend, KubernetesBackend)
    assert backend.config.namespace == "sbx"
    assert backend.config.image == "quarry-runner:9"
    assert backend.config.limits["memory_mb"] == 256


def test_the_runner_reads_its_job_from_a_file(tmp_path: Path) -> None:
    """The pod has no stdin: `python -m runner --job-file` is how it gets its job."""
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"code": "print('hi')\n6 * 7", "limits": LIMITS}))
    done = subprocess.run(
        [sys.executable, "-m", "runner", "--job-file", str(job)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    result = json.loads(done.stdout)
    assert done.returncode == 0
    assert result["ok"] is True
    assert result["stdout"] == "hi\n"
    assert result["result"] == "42"


def test_terminate_deletes_the_running_job_and_its_run_says_cancelled(
    data_dir: Path, cluster: Cluster
) -> None:
    """(Scripted API: no cluster here.) A user stops the run while the pod runs: the Job
    goes at once and the waiting run() reports Cancelled, not a failure of the sandbox."""
    backend = make_backend(cluster, data_dir)
    running = pod("Running", scheduled=SCHEDULED, running=True)
    stopped: list[int] = []

    def user_stops(seconds: float) -> None:
        cluster.clock.sleep(seconds)
        if not stopped:
            stopped.append(backend.terminate())

    backend._sleep = user_stops
    cluster.core.script("list_namespaced_pod", running, NO_POD)  # deleted with its Job
    cluster.batch.script("read_namespaced_job_status", api_error(404, "Not Found"))
    result = backend.run(a_job(data_dir))

    assert stopped == [1]
    assert result["error"]["type"] == "Cancelled"
    assert backend.terminate() == 0  # nothing left running
    cluster.assert_cleaned_up()
