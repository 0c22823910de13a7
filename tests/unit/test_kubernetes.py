"""deploy/k8s rendered by the real kustomize and validated against Kubernetes' schemas."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cleanup_worker.settings import Settings
from tests.unit.deploy_files import K8S, final_stage, run, tool

# The oldest Kubernetes the manifests target (the Jobs' podFailurePolicy rules without
# onPodConditions need 1.29), and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())
# Custom resources: no schema in kubernetes-validate; tests below check what they select.
CUSTOM_KINDS = {"ServiceMonitor", "ScaledObject"}
OVERLAY_IMAGE = "registry.example.com/platform/cleanup-worker:0.1.0"


def documented_edit(old: str, new: str) -> Callable[[str], str]:
    """An edit of overlays/example/kustomization.yaml that its comments tell operators to make."""

    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new)

    return edit


def with_optional(text: str) -> str:
    text = documented_edit("  # - ../../optional/", "  - ../../optional/")(text)
    return documented_edit("  - path: replicas.yaml\n", "")(text)


# The documented ways to render: the base, the example overlay, the overlay with the backfill
# turned into a real run (overlays/example/backfill-execute.yaml, step 2), the overlay
# with the optional ServiceMonitor and KEDA scaler listed, and the secure overlay on top of it.
VARIANTS: dict[str, tuple[str, Callable[[str], str] | None]] = {
    "base": ("base", None),
    "example": ("overlays/example", None),
    "example-execute": (
        "overlays/example",
        documented_edit("patches:\n", "patches:\n  - path: backfill-execute.yaml\n"),
    ),
    "example-optional": ("overlays/example", with_optional),
    # docs/security.md: mutual TLS to Kafka, verify-full to PostgreSQL, files from Secrets.
    "secure-example": ("overlays/secure-example", None),
}


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    done = run(tool("kustomize", pinned=True), "build", str(directory))
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc is not None]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Every variant, rendered once per module from a scratch copy of deploy/k8s."""
    outputs = {}
    for name, (path, edit) in VARIANTS.items():
        root = tmp_path_factory.mktemp(name) / "k8s"
        shutil.copytree(K8S, root)
        if edit is not None:
            kustomization = root / path / "kustomization.yaml"
            kustomization.write_text(edit(kustomization.read_text(encoding="utf-8")))
        outputs[name] = kustomize_build(root / path)
    return outputs


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind}/{name} rendered")


def pod_specs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        obj["spec"]["template"]["spec"] for obj in objects if obj["kind"] in {"Deployment", "Job"}
    ]


@pytest.fixture
def example(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["example"]


def worker_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = find(objects, "Deployment", "cleanup-worker")
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


# --- the real tools ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_objects_match_the_kubernetes_schema(
    rendered: dict[str, list[dict[str, Any]]], variant: str, version: str
) -> None:
    """Every object kustomize renders validates, strictly (no unknown field), for Kubernetes."""
    objects = rendered[variant]
    assert objects
    for obj in objects:
        if obj["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_rejects_a_misspelt_field(example: list[dict[str, Any]]) -> None:
    """The strict schemas catch a field that Kubernetes would silently drop."""
    deployment = find(example, "Deployment", "cleanup-worker")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_overlay_puts_everything_in_its_namespace(example: list[dict[str, Any]]) -> None:
    """Every namespaced object of the example lands in api-keys."""
    for obj in example:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "api-keys", obj["metadata"]["name"]


def test_overlay_image_reaches_every_container(example: list[dict[str, Any]]) -> None:
    """The overlay's images entry rewrites every container (a name mismatch would not)."""
    images = {c["image"] for spec in pod_specs(example) for c in spec["containers"]}
    assert images == {OVERLAY_IMAGE}


def test_no_secret_is_rendered(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """No variant renders a Secret: the manifests only reference one."""
    for objects in rendered.values():
        assert "Secret" not in {obj["kind"] for obj in objects}


def test_base_needs_no_custom_resources(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The base and the example apply on clusters without the Prometheus Operator or KEDA."""
    for variant in ("base", "example", "example-execute"):
        assert not CUSTOM_KINDS & {obj["kind"] for obj in rendered[variant]}


# --- the worker Deployment -----------------------------------------------------------------------


def test_probes_ask_livez_and_readyz_on_http(example: list[dict[str, Any]]) -> None:
    """The liveness probe asks /livez and the readiness probe /readyz, on the port named http."""
    container = worker_container(example)
    liveness = container["livenessProbe"]["httpGet"]
    readiness = container["readinessProbe"]["httpGet"]
    assert (liveness["path"], liveness["port"]) == ("/livez", "http")
    assert (readiness["path"], readiness["port"]) == ("/readyz", "http")


def test_http_port_is_the_settings_port(example: list[dict[str, Any]]) -> None:
    """The container port named http is the worker's default CLEANUP_HTTP_PORT."""
    ports = {port["name"]: port["containerPort"] for port in worker_container(example)["ports"]}
    assert ports["http"] == Settings.model_fields["http_port"].default


def test_workloads_run_hardened(example: list[dict[str, Any]]) -> None:
    """Every container runs non-root, read-only root, no escalation, no caps, memory-limited."""
    for spec in pod_specs(example):
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]["memory"]


def test_pods_run_as_the_image_user(example: list[dict[str, Any]]) -> None:
    """The Deployment's runAsUser is the uid the Dockerfile's final stage switches to."""
    uid = final_stage("USER")[-1].split(":")[0]
    assert worker_container(example)["securityContext"]["runAsUser"] == int(uid)


def test_termination_grace_exceeds_shutdown_grace(example: list[dict[str, Any]]) -> None:
    """terminationGracePeriodSeconds leaves at least 5 s beyond CLEANUP_SHUTDOWN_GRACE_S."""
    config = find(example, "ConfigMap", "cleanup-worker")["data"]
    default = Settings.model_fields["shutdown_grace_s"].default
    grace = float(config.get("CLEANUP_SHUTDOWN_GRACE_S", default))
    deployment = find(example, "Deployment", "cleanup-worker")
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= grace + 5


def test_database_url_comes_from_the_secret(example: list[dict[str, Any]]) -> None:
    """CLEANUP_DATABASE_URL is a secretKeyRef into the Secret named cleanup-worker."""
    env = {item["name"]: item for item in worker_container(example)["env"]}
    assert env["CLEANUP_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "cleanup-worker"


def test_configmap_holds_no_secret_setting(example: list[dict[str, Any]]) -> None:
    """The ConfigMap carries no database URL or Kafka password."""
    config = find(example, "ConfigMap", "cleanup-worker")["data"]
    assert not {"CLEANUP_DATABASE_URL", "CLEANUP_KAFKA_SASL_PASSWORD"} & set(config)


def test_metrics_service_selects_the_worker_pods(example: list[dict[str, Any]]) -> None:
    """The metrics Service selects the Deployment's pods and exposes port http."""
    service = find(example, "Service", "cleanup-worker-metrics")
    pod_labels = find(example, "Deployment", "cleanup-worker")["spec"]["template"]["metadata"]
    assert service["spec"]["selector"].items() <= pod_labels["labels"].items()
    assert [port["name"] for port in service["spec"]["ports"]] == ["http"]


def test_pod_disruption_budget_covers_the_workers(example: list[dict[str, Any]]) -> None:
    """At most one worker is voluntarily disrupted at a time."""
    budget = find(example, "PodDisruptionBudget", "cleanup-worker")
    pod_labels = find(example, "Deployment", "cleanup-worker")["spec"]["template"]["metadata"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels["labels"].items()


# --- Jobs and the optional resources -------------------------------------------------------------


def test_backfill_job_is_a_dry_run(example: list[dict[str, Any]]) -> None:
    """The example's backfill Job runs without --execute."""
    args = find(example, "Job", "cleanup-worker-backfill")["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert args[0] == "backfill"
    assert "--execute" not in args


def test_backfill_execute_patch_adds_execute(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Listing backfill-execute.yaml in the overlay's patches turns the backfill into a real run."""
    job = find(rendered["example-execute"], "Job", "cleanup-worker-backfill")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "backfill"
    assert "--execute" in args


def test_migrate_job_runs_migrate_as_the_owner(example: list[dict[str, Any]]) -> None:
    """The migrate Job runs `cleanup-worker migrate` with the owner's DSN, not the worker's."""
    container = find(example, "Job", "cleanup-worker-migrate")["spec"]["template"]["spec"][
        "containers"
    ][0]
    env = {item["name"]: item for item in container["env"]}
    assert container["args"] == ["migrate"]
    assert env["CLEANUP_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] != "database-url"


def test_servicemonitor_selects_the_metrics_service(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The optional ServiceMonitor, listed in the overlay, selects the metrics Service's port."""
    objects = rendered["example-optional"]
    monitor = find(objects, "ServiceMonitor", "cleanup-worker")
    service = find(objects, "Service", "cleanup-worker-metrics")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "http"


def test_keda_scales_the_worker_on_its_group(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The KEDA scaler targets the worker Deployment and reads its group's lag on its topic."""
    objects = rendered["example-optional"]
    scaled = find(objects, "ScaledObject", "cleanup-worker")
    config = find(objects, "ConfigMap", "cleanup-worker")["data"]
    trigger = scaled["spec"]["triggers"][0]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "cleanup-worker"
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == config["CLEANUP_KAFKA_GROUP_ID"]
    assert trigger["metadata"]["topic"] == config["CLEANUP_KAFKA_TOPICS"]


def test_doctor_runs_before_the_worker_as_the_worker(example: list[dict[str, Any]]) -> None:
    """The worker pod's init container runs `doctor` with the worker's own image, settings
    and Secret keys, so that it checks the login and principal the worker will use."""
    spec = find(example, "Deployment", "cleanup-worker")["spec"]["template"]["spec"]
    [init] = spec["initContainers"]
    worker = worker_container(example)
    assert init["args"] == ["doctor"]
    assert init["image"] == worker["image"] == OVERLAY_IMAGE
    assert init["envFrom"] == worker["envFrom"]
    secret_refs = {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in init["env"]
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    worker_refs = {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in worker["env"]
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    assert secret_refs == worker_refs
    context = init["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert init["resources"]["limits"]["memory"]


def test_secure_doctor_mounts_what_the_worker_mounts(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Over TLS the doctor gets the worker's certificate mounts and key password too."""
    spec = find(rendered["secure-example"], "Deployment", "cleanup-worker")["spec"]["template"]
    [init] = spec["spec"]["initContainers"]
    [worker] = spec["spec"]["containers"]
    assert {m["mountPath"] for m in init["volumeMounts"]} == {
        m["mountPath"] for m in worker["volumeMounts"]
    }
    assert {e["name"] for e in init["env"]} == {e["name"] for e in worker["env"]} - {
        "CLEANUP_KAFKA_CLIENT_ID"
    }
