"""The kubernetes backend's manifests, as pure functions returning plain dicts (tests compare
them whole and validate them against the Kubernetes schemas): the ConfigMap carrying the
job, the Job whose pod runs it, the labels the chart's NetworkPolicy selects, and which
files of the data volume the pod mounts.
"""

import math
import os
from dataclasses import dataclass, field
from typing import Any, Final

from worker.sandbox.base import plan_files as plan_job_files

# Every sandbox pod carries these labels; the chart's deny-all NetworkPolicy (no ingress,
# no egress) selects pods by them, so they are part of the security boundary: change them
# together with helm/quarry's sandbox NetworkPolicy.
SANDBOX_LABELS: Final[dict[str, str]] = {
    "app.kubernetes.io/component": "sandbox",
    "quarry.dev/sandbox": "true",
}
# The label naming the Job a pod (or ConfigMap) belongs to; the worker finds pods by it.
JOB_LABEL: Final = "quarry.dev/sandbox-job"
COMMON_LABELS: Final[dict[str, str]] = {
    "app.kubernetes.io/name": "quarry",
    "app.kubernetes.io/managed-by": "quarry-worker",
}
# The runner image's unprivileged user and group (runner/Dockerfile).
RUNNER_UID: Final = 10001
CONTAINER_NAME: Final = "runner"
JOB_FILE_DIR: Final = "/job/input"
JOB_FILE_KEY: Final = "job.json"
SANDBOX_TMP: Final = "/tmp"  # noqa: S108 - the pod's own emptyDir, not a shared /tmp
# A ConfigMap holds at most 1 MiB; leave room for its metadata.
MAX_JOB_BYTES: Final = 900 << 10
# Reasons a container waits that will not go away by waiting longer.
FATAL_WAITING: Final = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)


@dataclass(frozen=True)
class KubernetesConfig:
    namespace: str = "quarry-sandbox"
    image: str = "quarry-runner:latest"
    image_pull_policy: str = "IfNotPresent"
    data_claim: str = "quarry-data"
    # Where the worker sees the data volume; a file's subPath is its path relative to it.
    data_dir: str = ".data"
    cpus: float = 1.0
    tmp_mb: int = 64
    runtime_class_name: str | None = None  # e.g. "gvisor", where the cluster has it
    # "RuntimeDefault", or "Localhost:<path under the kubelet's seccomp folder>" for the
    # sandbox's own profile (helm/quarry/files/sandbox-seccomp.json; docs/SECURITY.md)
    seccomp_profile: str = "RuntimeDefault"
    schedule_timeout_s: float = 60.0
    startup_timeout_s: float = 120.0
    # Interpreter start-up, on top of the snippet's own timeout_s.
    start_grace_s: float = 10.0
    ttl_after_finished_s: int = 300
    poll_initial_s: float = 0.1
    poll_max_s: float = 1.0
    api_attempts: int = 3
    request_timeout_s: float = 30.0
    limits: dict[str, int] = field(default_factory=dict)


# --- manifests (pure) --------------------------------------------------------------------------
def job_labels(name: str) -> dict[str, str]:
    return {**COMMON_LABELS, **SANDBOX_LABELS, JOB_LABEL: name}


def make_configmap(
    name: str, namespace: str, job_json: str, owner: dict[str, Any] | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": job_labels(name)}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "immutable": True,
        "data": {JOB_FILE_KEY: job_json},
    }


def owner_reference(job_name: str, job_uid: str) -> dict[str, Any]:
    """Makes the Job the owner of its ConfigMap. No `blockOwnerDeletion`: that would need
    update rights on jobs/finalizers, and the worker deletes both anyway."""
    return {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job_uid}


def seccomp_field(profile: str) -> dict[str, str]:
    """A pod's `seccompProfile` from SANDBOX_SECCOMP_PROFILE (checked by the settings)."""
    if profile.startswith("Localhost:"):
        return {"type": "Localhost", "localhostProfile": profile.removeprefix("Localhost:")}
    return {"type": profile}


def quantity_cpu(cpus: float) -> str:
    return f"{max(1, round(cpus * 1000))}m"


def make_job(
    name: str,
    namespace: str,
    *,
    image: str,
    files: list[tuple[str, str]],
    memory_mb: int,
    cpus: float,
    data_claim: str,
    active_deadline_s: int,
    ttl_after_finished_s: int,
    tmp_mb: int = 64,
    image_pull_policy: str = "IfNotPresent",
    runtime_class_name: str | None = None,
    seccomp_profile: str = "RuntimeDefault",
) -> dict[str, Any]:
    """The Job running one snippet. `files` are (subPath in the data volume, path in the
    pod) pairs; the job JSON is the ConfigMap of the same name."""
    labels = job_labels(name)
    threads = str(max(1, math.ceil(cpus)))
    resources = {"cpu": quantity_cpu(cpus), "memory": f"{memory_mb}Mi"}
    mounts: list[dict[str, Any]] = [
        {"name": "job", "mountPath": JOB_FILE_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": SANDBOX_TMP},
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": "job",
            "configMap": {
                "name": name,
                "items": [{"key": JOB_FILE_KEY, "path": JOB_FILE_KEY}],
                "defaultMode": 0o444,
            },
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": f"{tmp_mb}Mi"}},
    ]
    if files:
        mounts += [
            {"name": "data", "mountPath": target, "subPath": sub_path, "readOnly": True}
            for sub_path, target in files
        ]
        volumes.append(
            {
                "name": "data",
                "persistentVolumeClaim": {"claimName": data_claim, "readOnly": True},
            }
        )
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": ["python", "-m", "runner"],
        "args": ["--job-file", f"{JOB_FILE_DIR}/{JOB_FILE_KEY}"],
        "workingDir": SANDBOX_TMP,
        "env": [
            {"name": "HOME", "value": SANDBOX_TMP},
            # stdout and stderr share the pod log: keep library warnings out of it.
            {"name": "PYTHONWARNINGS", "value": "ignore"},
            {"name": "OMP_NUM_THREADS", "value": threads},
            {"name": "OPENBLAS_NUM_THREADS", "value": threads},
            {"name": "MKL_NUM_THREADS", "value": threads},
        ],
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": seccomp_field(seccomp_profile),
        },
        "volumeMounts": mounts,
        "terminationMessagePolicy": "File",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # no environment variables naming the cluster's services
        "terminationGracePeriodSeconds": 0,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "seccompProfile": seccomp_field(seccomp_profile),
        },
        "containers": [container],
        "volumes": volumes,
    }
    if runtime_class_name:
        pod_spec["runtimeClassName"] = runtime_class_name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": active_deadline_s,
            "ttlSecondsAfterFinished": ttl_after_finished_s,
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


def plan_files(job: dict[str, Any], data_dir: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The job as the pod sees it (paths rewritten) and its (subPath, pod path) pairs. A
    file must exist under data_dir (the worker's view of the data volume): its subPath is
    its path relative to data_dir. (A subPath that does not exist would not fail: the
    kubelet would create a directory there.)"""
    root = os.path.realpath(data_dir)
    return plan_job_files(job, root, lambda real: os.path.relpath(real, root))
