"""The kubernetes backend: one Job per snippet, in its own namespace.

The manifests come from pure functions (`k8s_manifests.py`: `make_configmap`, `make_job`)
returning plain dicts, so tests compare them whole and validate them against the Kubernetes
schemas. The job JSON travels in a ConfigMap (owned by the Job once the Job exists, so the
garbage collector takes it too) that the runner reads with `--job-file`; datasets and
workspace files are mounted read-only from the shared data volume, one `subPath` each, so
the pod sees exactly its files; the result is the pod's log. The pod runs as a non-root user
with a read-only root filesystem, no service-account token, no privilege escalation, every
capability dropped, the runtime's default seccomp profile or Quarry's own
(`seccomp_profile`), requests = limits, a size-capped `/tmp`, and the labels the chart's
deny-all NetworkPolicy selects (`SANDBOX_LABELS`).

The API clients, the sleeper and the timer are injected (`from_settings` builds the real
ones), so the waiting logic is tested with scripted answers. API calls are retried on 5xx
only; a 404 on delete means already gone. The wait fails fast on image-pull errors, gives a
pod `schedule_timeout_s` to be scheduled and `startup_timeout_s` more to start, then the
snippet's own timeout to run. The Job and the ConfigMap are deleted whatever happens;
`ttlSecondsAfterFinished` and `activeDeadlineSeconds` are the cluster's backstops should the
worker die first.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import urllib3
from kubernetes.client.exceptions import ApiException

from worker.sandbox import base
from worker.sandbox.base import Backend, SandboxUnavailable, container_settings
from worker.sandbox.k8s_manifests import (
    CONTAINER_NAME,
    FATAL_WAITING,
    JOB_FILE_KEY,
    JOB_LABEL,
    MAX_JOB_BYTES,
    SANDBOX_LABELS,
    KubernetesConfig,
    make_configmap,
    make_job,
    owner_reference,
    plan_files,
)

if TYPE_CHECKING:
    from kubernetes.client import BatchV1Api, CoreV1Api

    from api.config import Settings


log = logging.getLogger("quarry.sandbox.kubernetes")

_T = TypeVar("_T")


# --- waiting -----------------------------------------------------------------------------------
@dataclass
class _Outcome:
    kind: str  # "finished", "timeout", "failed"
    pod: Any = None
    message: str = ""


class _StartFailed(Exception):
    """The pod cannot start (image, scheduling): no sandbox, a SandboxUnavailable."""


def _condition(pod: Any, kind: str) -> Any:
    for condition in pod.status.conditions or []:
        if condition.type == kind:
            return condition
    return None


def _container_status(pod: Any) -> Any:
    for status in pod.status.container_statuses or []:
        if status.name == CONTAINER_NAME:
            return status
    return None


def start_problem(pod: Any) -> str | None:
    """Why the pod's container will never start, if that is already known."""
    for status in (pod.status.init_container_statuses or []) + (
        pod.status.container_statuses or []
    ):
        waiting = status.state.waiting if status.state else None
        if waiting is not None and waiting.reason in FATAL_WAITING:
            return f"{waiting.reason}: {waiting.message or 'no details'}"
    return None


def result_from_log(raw: bytes) -> dict[str, Any]:
    """The result in the pod log. The log mixes stdout and stderr: the result is the whole
    log or, when something else was written too, its last line that is a result."""
    for candidate in [raw, *reversed(raw.strip().splitlines())]:
        if not candidate.lstrip().startswith(b"{"):
            continue
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict) and "ok" in value:
            return value
    return base.parse_result(raw, 0)  # says the result is unreadable


# --- the backend -------------------------------------------------------------------------------
class KubernetesBackend(Backend):
    name = "kubernetes"

    def __init__(
        self,
        batch_api: BatchV1Api,
        core_api: CoreV1Api,
        sleeper: Callable[[float], None] = time.sleep,
        timer: Callable[[], float] = time.monotonic,
        config: KubernetesConfig | None = None,
    ) -> None:
        self.config = config or KubernetesConfig()
        super().__init__(self.config.limits, timer)
        self.batch, self.core = batch_api, core_api
        self._sleep, self._timer = sleeper, timer

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesBackend:
        from kubernetes import client
        from kubernetes import config as kube_config

        try:
            kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kube_config.ConfigException:
            try:
                # KUBECONFIG as it is now (the client reads it once, on import).
                kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=os.environ.get("KUBECONFIG")
                )
            except (kube_config.ConfigException, OSError) as exc:
                raise SandboxUnavailable(
                    "No Kubernetes cluster is configured: the worker is not in a pod and "
                    f"has no kubeconfig ({exc})."
                ) from None
        api = client.ApiClient()
        config = KubernetesConfig(
            **container_settings(settings),
            namespace=settings.sandbox_namespace,
            data_claim=settings.sandbox_data_claim,
            seccomp_profile=settings.sandbox_seccomp_profile,
        )
        return cls(client.BatchV1Api(api), client.CoreV1Api(api), config=config)

    def manifests(self, job: dict[str, Any], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The ConfigMap and the Job for one job (limits already applied)."""
        limits = job["limits"]
        sandboxed, files = plan_files(job, self.config.data_dir)
        run_s = float(limits["timeout_s"]) + self.config.start_grace_s
        deadline = self.config.schedule_timeout_s + self.config.startup_timeout_s + run_s
        configmap = make_configmap(name, self.config.namespace, json.dumps(sandboxed))
        manifest = make_job(
            name,
            self.config.namespace,
            image=self.config.image,
            files=files,
            memory_mb=int(limits["memory_mb"]),
            cpus=self.config.cpus,
            data_claim=self.config.data_claim,
            active_deadline_s=math.ceil(deadline),
            ttl_after_finished_s=self.config.ttl_after_finished_s,
            tmp_mb=self.config.tmp_mb,
            image_pull_policy=self.config.image_pull_policy,
            runtime_class_name=self.config.runtime_class_name,
            seccomp_profile=self.config.seccomp_profile,
        )
        return configmap, manifest

    # --- one job ------------------------------------------------------------------------------
    def _execute(self, job: dict[str, Any], key: int) -> dict[str, Any]:
        limits = job["limits"]
        name = f"quarry-sandbox-{secrets.token_hex(6)}"
        configmap, manifest = self.manifests(job, name)
        if len(configmap["data"][JOB_FILE_KEY].encode()) > MAX_JOB_BYTES:
            return base.failure("JobError", "The snippet is too large to send to a sandbox.")
        try:
            with self._runs.running(key, name):
                self._create(name, configmap, manifest)
                try:
                    outcome = self._wait(name, limits)
                except _StartFailed as exc:
                    if not self._runs.was_stopped(key):
                        raise SandboxUnavailable(str(exc)) from None
                    outcome = _Outcome("failed", message="stopped")
                return self._result(outcome, limits)
        finally:
            self._delete(name)

    def _api(self, call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """One API call, retried (with backoff) only on a 5xx answer."""
        delay = 0.2
        for attempt in range(1, self.config.api_attempts + 1):
            try:
                return call(*args, _request_timeout=self.config.request_timeout_s, **kwargs)
            except ApiException as exc:
                if exc.status is None or exc.status < 500 or attempt == self.config.api_attempts:
                    raise
                log.info("kubernetes API answered %s; retrying", exc.status)
            self._sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _create(self, name: str, configmap: dict[str, Any], manifest: dict[str, Any]) -> None:
        namespace = self.config.namespace
        try:
            # The ConfigMap first: the pod could not start without it.
            self._api(self.core.create_namespaced_config_map, namespace, configmap)
            created = self._api(self.batch.create_namespaced_job, namespace, manifest)
        except ApiException as exc:
            raise SandboxUnavailable(
                f"The cluster refused the sandbox Job in namespace {namespace!r} "
                f"({exc.status} {exc.reason}): {_api_message(exc)}"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise SandboxUnavailable(f"The Kubernetes API is unreachable: {exc}") from None
        uid = getattr(getattr(created, "metadata", None), "uid", None)
        if not uid:
            return
        patch = {"metadata": {"ownerReferences": [owner_reference(name, uid)]}}
        try:
            self._api(self.core.patch_namespaced_config_map, name, namespace, patch)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            # Not fatal: the worker deletes the ConfigMap itself below.
            log.warning("could not make Job %s own its ConfigMap: %s", name, exc)

    def _find_pod(self, name: str) -> Any:
        pods = self._api(
            self.core.list_namespaced_pod,
            self.config.namespace,
            label_selector=f"{JOB_LABEL}={name}",
        )
        items = list(pods.items or [])
        return items[-1] if items else None

    def _job_failure(self, name: str) -> _Outcome | None:
        job = self._api(self.batch.read_namespaced_job_status, name, self.config.namespace)
        for condition in (job.status.conditions if job.status else None) or []:
            if condition.type == "Failed" and condition.status == "True":
                if condition.reason == "DeadlineExceeded":
                    return _Outcome("timeout")
                return _Outcome("failed", message=f"{condition.reason}: {condition.message}")
        return None

    def _wait(self, name: str, limits: dict[str, int]) -> _Outcome:
        """Poll (with backoff) until the pod ends, fails to start or runs out of time."""
        config = self.config
        created = self._timer()
        scheduled_at: float | None = None
        running_at: float | None = None
        run_s = float(limits["timeout_s"]) + config.start_grace_s
        interval = config.poll_initial_s
        while True:
            try:
                pod = self._find_pod(name)
                job_outcome = self._job_failure(name) if pod is None else None
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                return _Outcome("failed", message=f"lost track of the sandbox Job ({exc})")
            now = self._timer()
            if job_outcome is not None:
                return job_outcome
            phase = pod.status.phase if pod is not None and pod.status else None
            if phase in ("Succeeded", "Failed"):
                return _Outcome("finished", pod)
            if pod is not None:
                problem = start_problem(pod)
                if problem:
                    raise _StartFailed(f"The sandbox pod cannot start: {problem}")
            if phase == "Running":
                running_at = now if running_at is None else running_at
                if now - running_at > run_s:
                    return _Outcome("timeout", pod)
            else:
                scheduled = _condition(pod, "PodScheduled") if pod is not None else None
                if scheduled is not None and scheduled.status == "True":
                    scheduled_at = now if scheduled_at is None else scheduled_at
                    if now - scheduled_at > config.startup_timeout_s:
                        raise _StartFailed(
                            f"The sandbox pod was scheduled but did not start within "
                            f"{config.startup_timeout_s:g} s."
                        )
                elif now - created > config.schedule_timeout_s:
                    why = ""
                    if scheduled is not None and scheduled.reason:
                        why = f": {scheduled.reason}: {scheduled.message or ''}".rstrip(": ")
                    raise _StartFailed(
                        f"The sandbox pod could not be scheduled within "
                        f"{config.schedule_timeout_s:g} s{why}"
                    )
            self._sleep(interval)
            interval = min(interval * 1.5, config.poll_max_s)

    def _result(self, outcome: _Outcome, limits: dict[str, int]) -> dict[str, Any]:
        if outcome.kind == "timeout":
            return base.timed_out(limits)
        if outcome.kind == "failed":
            return base.failure("SandboxError", f"The sandbox failed: {outcome.message}")
        pod = outcome.pod
        status = _container_status(pod)
        terminated = status.state.terminated if status is not None and status.state else None
        if pod.status.reason == "DeadlineExceeded":
            return self._result(_Outcome("timeout"), limits)
        if terminated is not None and terminated.reason == "OOMKilled":
            return base.out_of_memory(limits)
        cap = int(limits["max_output_bytes"]) + base.OUTPUT_SLACK
        try:
            response: Any = self._api(  # a urllib3 response, with _preload_content=False
                self.core.read_namespaced_pod_log,
                pod.metadata.name,
                self.config.namespace,
                container=CONTAINER_NAME,
                limit_bytes=cap + 1,
                # Raw bytes: the client would otherwise "deserialize" a JSON log into a
                # Python repr.
                _preload_content=False,
            )
            raw = bytes(response.data)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            return base.failure("SandboxError", f"The sandbox's output could not be read ({exc}).")
        if len(raw) > cap:
            return base.too_large(limits)
        if not raw.strip():
            code = terminated.exit_code if terminated is not None else None
            return base.ended_without_result("pod", f" (exit code {code})")
        return result_from_log(raw)

    def _delete(self, name: str) -> None:
        """Delete the Job (its pod with it) and the ConfigMap; gone already is fine."""
        namespace = self.config.namespace
        for what, call, kwargs in (
            (
                "Job",
                self.batch.delete_namespaced_job,
                {"propagation_policy": "Background", "grace_period_seconds": 0},
            ),
            ("ConfigMap", self.core.delete_namespaced_config_map, {}),
        ):
            try:
                self._api(call, name, namespace, **kwargs)
            except ApiException as exc:
                if exc.status != 404:
                    log.warning("could not delete sandbox %s %s: %s", what, name, exc)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                log.warning("could not delete sandbox %s %s: %s", what, name, exc)

    def _stop(self, handle: Any) -> None:
        """Delete a running Job; its run() notices at its next poll."""
        self._delete(handle)

    # --- the rest of the interface ------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "backend": self.name,
            "namespace": self.config.namespace,
            "image": self.config.image,
        }
        try:
            self._api(
                self.batch.list_namespaced_job,
                self.config.namespace,
                label_selector=f"{JOB_LABEL}",
                limit=1,
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            return {**answer, "ok": False, "error": f"the Kubernetes API: {exc}"}
        return {**answer, "ok": True}


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


__all__ = [
    "JOB_LABEL",
    "SANDBOX_LABELS",
    "KubernetesBackend",
    "KubernetesConfig",
    "make_configmap",
    "make_job",
    "owner_reference",
    "plan_files",
    "result_from_log",
]
