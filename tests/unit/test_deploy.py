"""Deployable artefacts (Dockerfile, compose, Kubernetes, alerts, dashboard), checked offline."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cleanup_worker.observability.metrics import REGISTRY
from cleanup_worker.settings import Settings

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ALERTS = DEPLOY / "observability" / "alerts.yaml"
DASHBOARD = DEPLOY / "observability" / "grafana-dashboard.json"

WORKER_LABELS = {
    "app.kubernetes.io/name": "cleanup-worker",
    "app.kubernetes.io/component": "worker",
}


# --- helpers -------------------------------------------------------------------------------


def documents(path: Path) -> list[Any]:
    """Every non-empty YAML document in a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def yaml_files() -> list[Path]:
    found = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})
    return [*found, COMPOSE]


def manifests(directory: Path) -> Iterator[dict[str, Any]]:
    """The Kubernetes objects in a directory, kustomization files aside."""
    for path in sorted(directory.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            yield from documents(path)


def k8s_object(kind: str, name: str, directory: Path = BASE) -> dict[str, Any]:
    for doc in manifests(directory):
        if doc.get("kind") == kind and doc["metadata"]["name"] == name:
            found: dict[str, Any] = doc
            return found
    raise AssertionError(f"no {kind}/{name} in {directory}")


def deployment() -> dict[str, Any]:
    return k8s_object("Deployment", "cleanup-worker")


def worker_container() -> dict[str, Any]:
    container: dict[str, Any] = deployment()["spec"]["template"]["spec"]["containers"][0]
    return container


def workloads() -> list[dict[str, Any]]:
    return [doc for doc in manifests(BASE) if doc["kind"] in {"Deployment", "Job"}]


def kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def compose_service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose()["services"][name]
    return service


def as_args(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def exported_metric_names() -> set[str]:
    """Every series name /metrics can expose, whether or not a labelled child exists yet."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without"}


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana query) selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers (Grafana variables too)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    grouping = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
    text = re.sub(grouping, "", text)
    # Identifiers not followed by "(" (those are functions and aggregations).
    tokens = re.findall(r"(?<![\w.$])([A-Za-z_:][\w:]*)\b(?!\s*\()", text)
    return {token for token in tokens if token.lower() not in PROMQL_WORDS}


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in documents(ALERTS)[0]["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)


def dashboard_exprs() -> list[str]:
    return [
        target["expr"]
        for panel in panels(dashboard())
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuations joined."""
    lines = [
        line
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    ]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), rest.strip()))
    return stages


def final_stage(keyword: str) -> list[str]:
    return [rest for key, rest in dockerfile_stages()[-1] if key == keyword]


# --- every file parses -----------------------------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_file_parses(path: Path) -> None:
    """Every YAML file under deploy/, and docker-compose.yml, parses to at least one document."""
    assert documents(path)


@pytest.mark.parametrize(
    "path", sorted(K8S.rglob("*.yaml")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_kubernetes_documents_name_their_kind(path: Path) -> None:
    """Every Kubernetes document has apiVersion and kind, and every object a name."""
    for doc in documents(path):
        assert doc.get("apiVersion")
        assert doc.get("kind")
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"]


@pytest.mark.parametrize("path", kustomizations(), ids=lambda p: str(p.relative_to(ROOT)))
def test_kustomization_files_exist(path: Path) -> None:
    """Every resource and patch a kustomization lists exists on disk."""
    kustomization = documents(path)[0]
    listed = [*kustomization.get("resources", [])]
    listed += [patch["path"] for patch in kustomization.get("patches", []) if "path" in patch]
    assert listed
    for entry in listed:
        target = (path.parent / entry).resolve()
        assert target.is_file() or (target / "kustomization.yaml").is_file(), entry


def test_no_secret_is_committed() -> None:
    """No Secret object is committed under deploy/: the manifests only reference one."""
    kinds = {doc.get("kind") for path in yaml_files() for doc in documents(path)}
    assert "Secret" not in kinds


# --- the worker Deployment ---------------------------------------------------------------------


def test_liveness_probe_is_livez_on_http() -> None:
    """The liveness probe asks /livez on the port named http."""
    probe = worker_container()["livenessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/livez", "http")


def test_readiness_probe_is_readyz_on_http() -> None:
    """The readiness probe asks /readyz on the port named http."""
    probe = worker_container()["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/readyz", "http")


def test_http_port_is_the_settings_port() -> None:
    """The container port named http is the worker's default CLEANUP_HTTP_PORT."""
    ports = {port["name"]: port["containerPort"] for port in worker_container()["ports"]}
    assert ports["http"] == Settings.model_fields["http_port"].default


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_workload_runs_hardened(workload: dict[str, Any]) -> None:
    """Every pod runs as non-root with a read-only root, no privilege escalation, no caps."""
    for container in workload["spec"]["template"]["spec"]["containers"]:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_workload_has_memory_limit(workload: dict[str, Any]) -> None:
    """Every container has resource requests and a memory limit."""
    for container in workload["spec"]["template"]["spec"]["containers"]:
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]["memory"]


def test_pods_run_as_the_image_user() -> None:
    """The Deployment's runAsUser is the uid the Dockerfile's final stage switches to."""
    uid = final_stage("USER")[-1].split(":")[0]
    assert worker_container()["securityContext"]["runAsUser"] == int(uid)


def test_termination_grace_exceeds_shutdown_grace() -> None:
    """terminationGracePeriodSeconds leaves at least 5 s beyond CLEANUP_SHUTDOWN_GRACE_S."""
    config = k8s_object("ConfigMap", "cleanup-worker")["data"]
    default = Settings.model_fields["shutdown_grace_s"].default
    grace = float(config.get("CLEANUP_SHUTDOWN_GRACE_S", default))
    assert deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= grace + 5


def test_database_url_comes_from_the_secret() -> None:
    """CLEANUP_DATABASE_URL is a secretKeyRef into the Secret named cleanup-worker."""
    env = {item["name"]: item for item in worker_container()["env"]}
    ref = env["CLEANUP_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "cleanup-worker"


def test_configmap_holds_no_secret_setting() -> None:
    """The ConfigMap carries no database URL or Kafka password."""
    config = k8s_object("ConfigMap", "cleanup-worker")["data"]
    assert not {"CLEANUP_DATABASE_URL", "CLEANUP_KAFKA_SASL_PASSWORD"} & set(config)


def test_metrics_service_selects_the_worker_pods() -> None:
    """The metrics Service carries the worker labels and selects the Deployment's pods."""
    service = k8s_object("Service", "cleanup-worker-metrics")
    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert WORKER_LABELS.items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [port["name"] for port in service["spec"]["ports"]] == ["http"]


def test_servicemonitor_selects_the_metrics_service() -> None:
    """The optional ServiceMonitor selects the metrics Service and scrapes port http."""
    monitor = k8s_object("ServiceMonitor", "cleanup-worker", K8S / "optional")
    service = k8s_object("Service", "cleanup-worker-metrics")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "http"


def test_servicemonitor_is_not_in_the_base() -> None:
    """The base applies on clusters without the Prometheus Operator's CRDs."""
    kinds = {doc["kind"] for doc in manifests(BASE)}
    assert not {"ServiceMonitor", "ScaledObject", "PrometheusRule"} & kinds


def test_pod_disruption_budget_covers_the_workers() -> None:
    """At most one worker is voluntarily disrupted at a time."""
    budget = k8s_object("PodDisruptionBudget", "cleanup-worker")
    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


# --- Jobs and the example overlay --------------------------------------------------------------


def test_backfill_job_is_a_dry_run() -> None:
    """The base's backfill Job runs without --execute."""
    job = k8s_object("Job", "cleanup-worker-backfill")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "backfill"
    assert "--execute" not in args


def test_migrate_job_runs_migrate() -> None:
    """The migrate Job runs `cleanup-worker migrate` with the owner's DSN."""
    container = k8s_object("Job", "cleanup-worker-migrate")["spec"]["template"]["spec"][
        "containers"
    ][0]
    env = {item["name"]: item for item in container["env"]}
    assert container["args"] == ["migrate"]
    assert env["CLEANUP_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] != "database-url"


def test_backfill_execute_patch_adds_execute() -> None:
    """overlays/example/backfill-execute.yaml turns the backfill into a real run."""
    patch = documents(OVERLAY / "backfill-execute.yaml")[0]
    assert "--execute" in patch["spec"]["template"]["spec"]["containers"][0]["args"]


def test_backfill_execute_patch_is_not_applied_by_default() -> None:
    """The example overlay does not list backfill-execute.yaml."""
    kustomization = documents(OVERLAY / "kustomization.yaml")[0]
    listed = [*kustomization.get("resources", [])]
    listed += [patch.get("path") for patch in kustomization.get("patches", [])]
    assert "backfill-execute.yaml" not in listed


def test_keda_scales_to_the_partition_count() -> None:
    """KEDA scales between 2 and the 6 partitions that compose creates for the topic."""
    scaled = k8s_object("ScaledObject", "cleanup-worker", K8S / "optional")
    init = " ".join(as_args(compose_service("kafka-init")["command"]))
    partitions = re.search(r"--topic account-membership --partitions (\d+)", init)
    assert partitions
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (
        2,
        int(partitions.group(1)),
    )


def test_keda_watches_the_worker_group() -> None:
    """The KEDA trigger reads the lag of the worker's consumer group on its topic."""
    trigger = k8s_object("ScaledObject", "cleanup-worker", K8S / "optional")["spec"]["triggers"][0]
    config = k8s_object("ConfigMap", "cleanup-worker")["data"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == config["CLEANUP_KAFKA_GROUP_ID"]
    assert trigger["metadata"]["topic"] == config["CLEANUP_KAFKA_TOPICS"]


# --- docker-compose.yml --------------------------------------------------------------------


def test_compose_worker_command_is_run() -> None:
    """The compose worker runs `cleanup-worker run`."""
    assert as_args(compose_service("worker")["command"]) == ["run"]


def test_compose_worker_has_two_replicas() -> None:
    """The compose stack starts two workers in one consumer group."""
    assert compose_service("worker")["deploy"]["replicas"] == 2


def test_compose_worker_waits_for_migrate() -> None:
    """The workers start only after the migrations completed successfully."""
    depends = compose_service("worker")["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_compose_dependencies_all_have_conditions() -> None:
    """Every depends_on entry waits for a health or completion condition."""
    for name, service in compose()["services"].items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), name
        for target, rule in depends.items():
            assert rule["condition"] in {
                "service_healthy",
                "service_completed_successfully",
            }, f"{name} -> {target}"


def test_compose_long_running_services_have_healthchecks() -> None:
    """Every service that keeps running has a healthcheck."""
    for name, service in compose()["services"].items():
        if service.get("restart", "no") != "no":
            assert service["healthcheck"]["test"], name


def test_compose_backfill_is_an_opt_in_dry_run() -> None:
    """The backfill service only starts under its profile, and without --execute."""
    backfill = compose_service("backfill")
    assert backfill["profiles"] == ["backfill"]
    assert "--execute" not in as_args(backfill["command"])


def test_compose_needs_no_variables() -> None:
    """docker-compose.yml has no ${VAR} placeholders to fill in."""
    text = COMPOSE.read_text(encoding="utf-8").replace("$$", "")
    assert "$" not in text


# --- alerts and dashboard --------------------------------------------------------------------


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_uses_existing_metrics(rule: dict[str, Any]) -> None:
    """An alert's expression selects only metrics the worker exports, or kube_* metrics."""
    names = metric_names_in(rule["expr"])
    assert names
    unknown = {n for n in names if not n.startswith("kube_")} - exported_metric_names()
    assert not unknown


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_is_annotated(rule: dict[str, Any]) -> None:
    """An alert has a severity and a summary, description and runbook in docs/operations.md."""
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["annotations"]["summary"]
    assert rule["annotations"]["description"]
    assert rule["annotations"]["runbook_url"].startswith("docs/operations.md#")


def test_dashboard_is_a_grafana_dashboard() -> None:
    """The dashboard JSON parses, has schemaVersion 39 and has panels with queries."""
    board = dashboard()
    assert board["schemaVersion"] == 39
    assert dashboard_exprs()


@pytest.mark.parametrize("expr", dashboard_exprs())
def test_dashboard_query_uses_existing_metrics(expr: str) -> None:
    """A dashboard query selects only metrics the worker exports."""
    names = metric_names_in(expr)
    assert names
    assert names <= exported_metric_names()


def test_dashboard_panel_ids_are_unique() -> None:
    """Grafana needs distinct panel ids."""
    ids = [panel["id"] for panel in panels(dashboard())]
    assert len(ids) == len(set(ids))


def test_metric_name_extraction_ignores_functions_and_labels() -> None:
    """The PromQL scanner keeps metric names, not functions, labels, ranges or keywords."""
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[5m]))) > 1 '
        "and on() absent(b) or sum(c) without (d)"
    )
    assert metric_names_in(expr) == {"a_bucket", "b", "c"}


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_is_multi_stage() -> None:
    """A builder stage and a python:3.11-slim final stage."""
    stages = dockerfile_stages()
    assert len(stages) >= 2
    assert stages[-1][0][1].split()[0] == "python:3.11-slim"


def test_dockerfile_final_stage_runs_as_non_root() -> None:
    """The final stage ends on a USER that is not root."""
    users = final_stage("USER")
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_final_stage_has_no_build_tools() -> None:
    """No compiler or package installation in the final stage."""
    runs = " ".join(final_stage("RUN")).lower()
    for tool in ("gcc", "build-essential", "apt-get install", "apk add", "g++"):
        assert tool not in runs


def test_dockerfile_final_stage_copies_only_the_venv() -> None:
    """The final stage takes the built venv from the builder and nothing else."""
    copies = final_stage("COPY")
    assert copies
    for copy in copies:
        assert copy.split()[-2:] == ["/opt/venv", "/opt/venv"]
        assert "--from=builder" in copy


def test_dockerfile_healthcheck_asks_livez() -> None:
    """The image's HEALTHCHECK asks /livez."""
    checks = final_stage("HEALTHCHECK")
    assert len(checks) == 1
    assert "/livez" in checks[0]


def test_dockerfile_entrypoint_is_cleanup_worker() -> None:
    """The entrypoint is the cleanup-worker CLI, running `run` by default."""
    assert json.loads(final_stage("ENTRYPOINT")[-1]) == ["cleanup-worker"]
    assert json.loads(final_stage("CMD")[-1]) == ["run"]


def test_dockerignore_keeps_secrets_out() -> None:
    """.dockerignore excludes everything by default, so .env and .dev never reach the build."""
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"
