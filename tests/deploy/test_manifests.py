"""The deployment shape of the replicated topology: the Helm chart, its plain rendering, Compose.

What runs here, offline (no cluster, no Docker, no Kafka, no PostgreSQL):

* The chart deploy/helm/saga-coordinator is rendered by Helm's own engine: helm-python-sdk
  (PyPI) binds Helm's Go SDK (helm.sh/helm/v4, the code of ``helm template`` and
  ``helm lint``) through the shared library its wheel ships; no ``helm`` binary exists on
  PyPI for Linux outside of heavy AWS CDK layers. deploy/kubernetes/render.py drives it, in a
  subprocess so the Go runtime stays out of this process. It renders with the default values,
  with ``coordinator.replicas=5,serviceMonitor.enabled=true``, and with an external Secret and
  no Helm hooks; the chart also passes ``helm lint --strict``.
* deploy/kubernetes/saga-coordinator.yaml must equal the default rendering (stale check).
* Every rendered object is validated, strictly (unknown fields are errors), against the
  Kubernetes JSON schemas of 1.30 and of the newest version kubernetes-validate (PyPI) ships;
  it bundles the schemas, generated from Kubernetes' OpenAPI. It has no schema for CRDs, so
  the ServiceMonitor (monitoring.coreos.com/v1) is skipped by it and checked by hand here.
* deploy/compose/compose.yaml is validated with jsonschema against the Compose
  Specification's schema, tests/deploy/compose-spec.json: the official compose-spec.json
  (compose-spec/compose-spec, Apache-2.0), copied unchanged from the PyPI wheel
  check-jsonschema 0.39.0 (check_jsonschema/builtin_schemas/vendor/compose-spec.json,
  sha256 below; that package is not a dependency: its import fails with click < 8.4).
* Structure a reviewer cares about: PDBs, probes, no per-replica ids, the migration Job, the
  Secret references, the security context, and the Compose file's replicas and healthchecks.

Not validated here: that the image builds, that anything starts (no real cluster and no
``docker compose up``), the admission-time rules of a live API server, and the
ServiceMonitor against the Prometheus Operator's CRD schema.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

ROOT = Path(__file__).resolve().parents[2]
RENDER = ROOT / "deploy" / "kubernetes" / "render.py"
COMMITTED = ROOT / "deploy" / "kubernetes" / "saga-coordinator.yaml"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.json")
COMPOSE_SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
REGENERATE = ".venv/bin/python deploy/kubernetes/render.py"

KUBE_VERSIONS = ["1.30.0", kv_utils.latest_version()]
PARTICIPANTS = ("inventory", "payments", "orders", "shipping")
PER_REPLICA_IDS = {"SAGA_RELAY_ID", "SAGA_RELAY_SHARD", "SAGA_GROUP_ID"}
COMMON_ENV = {
    "SAGA_DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "SAGA_TOPIC_PREFIX",
    "SAGA_DEFINITIONS",
    "SAGA_LOG_FORMAT",
    "SAGA_PARTITIONS",
    "SAGA_REPLICATION_FACTOR",
    "SAGA_RELAY_PRODUCER_PER",
}
CRD_GROUPS = ("monitoring.coreos.com/",)
"""API groups of custom resources: kubernetes-validate has no schema for them."""

RENDERINGS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "scaled": ("coordinator.replicas=5,serviceMonitor.enabled=true,relayProducerPer=lane",),
    "external-secret": (
        "secret.existingSecret=saga-prod,migration.helmHook=false",
        "prometheusAnnotations=false,topologySpread.enabled=false",
    ),
}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RENDER), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def _render(sets: tuple[str, ...]) -> str:
    args = ["--stdout"]
    for expression in sets:
        args += ["--set", expression]
    res = _run(*args)
    assert res.returncode == 0, f"render.py {' '.join(args)} failed:\n{res.stderr}"
    return res.stdout


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    """Each rendering's text."""
    return {name: _render(sets) for name, sets in RENDERINGS.items()}


@pytest.fixture(scope="module")
def manifests(rendered: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Each rendering's objects."""
    return {name: [d for d in yaml.safe_load_all(text) if d] for name, text in rendered.items()}


@pytest.fixture(scope="module", params=list(RENDERINGS))
def docs(request: pytest.FixtureRequest, manifests: dict[str, list[dict[str, Any]]]):
    """The objects of one rendering (the structural tests run on each)."""
    return manifests[request.param]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


# --- helpers -------------------------------------------------------------------------------


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def component(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The object of ``kind`` whose ``app.kubernetes.io/component`` label is ``name``."""
    found = [
        d
        for d in by_kind(docs, kind)
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == name
    ]
    assert len(found) == 1, f"expected one {kind} of component {name}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in {"Deployment", "Job"}]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container.get("ports", []) if p["name"] == port]
    assert numbers, f"container {container['name']} has no port named {port!r}"
    return int(numbers[0])


def main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(deployment)["containers"]
    return container


# --- rendering ----------------------------------------------------------------------------


def test_committed_manifests_are_the_default_rendering(rendered: dict[str, str]) -> None:
    assert COMMITTED.read_text() == rendered["defaults"], (
        f"{COMMITTED.relative_to(ROOT)} is stale (the chart or render.py changed): "
        f"regenerate it with `{REGENERATE}` and commit the result"
    )
    res = _run("--check")
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_chart_passes_helm_lint_strict(name: str) -> None:
    args = ["--lint"]
    for expression in RENDERINGS[name]:
        args += ["--set", expression]
    res = _run(*args)
    assert res.returncode == 0, f"helm lint --strict failed:\n{res.stdout}\n{res.stderr}"
    report = json.loads(res.stdout)
    assert report["total_charts_linted"] == 1
    assert not report["errors"]
    assert all(m["severity"] < 2 for m in report["messages"]), report["messages"]


def test_overrides_reach_the_manifests(manifests: dict[str, list[dict[str, Any]]]) -> None:
    assert component(manifests["defaults"], "Deployment", "coordinator")["spec"]["replicas"] == 3
    assert component(manifests["scaled"], "Deployment", "coordinator")["spec"]["replicas"] == 5
    assert not by_kind(manifests["defaults"], "ServiceMonitor")
    assert by_kind(manifests["scaled"], "ServiceMonitor")
    assert not by_kind(manifests["external-secret"], "Secret")
    for name, producer_per in (("defaults", "process"), ("scaled", "lane")):
        for workload in workloads(manifests[name]):
            for container in containers(workload):
                assert env_of(container)["SAGA_RELAY_PRODUCER_PER"]["value"] == producer_per


# --- Kubernetes schemas -------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(
    manifests: dict[str, list[dict[str, Any]]], version: str
) -> None:
    failures = []
    validated: set[str] = set()
    for name, objects in manifests.items():
        for doc in objects:
            if doc["apiVersion"].startswith(CRD_GROUPS):
                continue  # no schema for custom resources: see test_service_monitors
            where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                failures.append(f"{where}: {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                failures.append(f"{where}: {exc.message}")
            else:
                validated.add(doc["kind"])
    assert not failures, "\n".join(failures)
    assert validated >= {
        "Deployment",
        "Job",
        "Service",
        "Secret",
        "ServiceAccount",
        "PodDisruptionBudget",
    }


def test_the_schema_validation_is_strict(manifests: dict[str, list[dict[str, Any]]]) -> None:
    broken = copy.deepcopy(component(manifests["defaults"], "Deployment", "coordinator"))
    main_container(broken)["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[0], strict=True)


# --- structure ----------------------------------------------------------------------------


def test_every_replicated_deployment_has_a_pdb(docs: list[dict[str, Any]]) -> None:
    pdbs = by_kind(docs, "PodDisruptionBudget")
    for deployment in by_kind(docs, "Deployment"):
        if deployment["spec"]["replicas"] < 2:
            continue
        labels = pod_labels(deployment)
        covering = [p for p in pdbs if selects(p["spec"]["selector"]["matchLabels"], labels)]
        assert len(covering) == 1, f"{deployment['metadata']['name']}: {len(covering)} PDBs"
        assert covering[0]["spec"]["maxUnavailable"] == 1
        assert "minAvailable" not in covering[0]["spec"]
    for pdb in pdbs:
        matched = [
            d
            for d in by_kind(docs, "Deployment")
            if selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(d))
        ]
        assert len(matched) == 1, f"PDB {pdb['metadata']['name']} selects {len(matched)}"


def test_deployment_selectors_match_their_pods(docs: list[dict[str, Any]]) -> None:
    for deployment in by_kind(docs, "Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selects(selector, pod_labels(deployment))
        others = [d for d in by_kind(docs, "Deployment") if d is not deployment]
        assert not any(selects(selector, pod_labels(d)) for d in others), (
            f"{deployment['metadata']['name']}'s selector also selects another Deployment"
        )


def test_coordinators(docs: list[dict[str, Any]]) -> None:
    coordinator = component(docs, "Deployment", "coordinator")
    assert coordinator["spec"]["replicas"] >= 3
    spec = pod_spec(coordinator)
    assert spec["terminationGracePeriodSeconds"] == 60
    container = main_container(coordinator)
    assert container["command"] == ["saga", "coordinator"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert port_number(container, container[probe]["httpGet"]["port"]) == 8081
    env = env_of(container)
    assert env["SAGA_HEALTH_PORT"]["value"] == "8081"
    assert env["SAGA_HEALTH_HOST"]["value"] == "0.0.0.0"
    # Rolling updates never take a coordinator down before its successor is ready.
    assert coordinator["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_api(docs: list[dict[str, Any]]) -> None:
    api = component(docs, "Deployment", "api")
    assert api["spec"]["replicas"] == 2
    container = main_container(api)
    assert container["command"][:2] == ["saga", "api"]
    assert "--no-migrate" in container["command"], "the migration Job owns the schema"
    env = env_of(container)
    assert env["SAGA_API_HOST"]["value"] == "0.0.0.0"
    assert env["SAGA_API_PORT"]["value"] == "8080"
    assert env["SAGA_METRICS_EXPORTER"]["value"] == "prometheus"
    assert "secretKeyRef" in env["SAGA_API_TOKENS"]["valueFrom"], "tokens come from a Secret"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert port_number(container, container["readinessProbe"]["httpGet"]["port"]) == 8080
    service = component(docs, "Service", "api")
    (port,) = service["spec"]["ports"]
    assert port_number(container, port["targetPort"]) == 8080


def test_participants(docs: list[dict[str, Any]]) -> None:
    urls = set()
    for name in PARTICIPANTS:
        deployment = component(docs, "Deployment", name)
        assert deployment["spec"]["replicas"] == 2
        container = main_container(deployment)
        assert container["command"] == ["python", "-m", f"services.{name}"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert port_number(container, container["readinessProbe"]["httpGet"]["port"]) == 8081
        env = env_of(container)
        assert env["SAGA_HEALTH_PORT"]["value"] == "8081"
        assert env["SAGA_HEALTH_HOST"]["value"] == "0.0.0.0"
        ref = env["SAGA_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == f"{name.upper()}_DATABASE_URL"
        urls.add(ref["key"])
    assert len(urls) == len(PARTICIPANTS), "each participant has its own database URL"


def test_participant_databases_are_separate() -> None:
    values = yaml.safe_load((ROOT / "deploy/helm/saga-coordinator/values.yaml").read_text())
    store = values["database"]["url"]
    for name in PARTICIPANTS:
        url = values["participants"][name]["databaseUrl"]
        assert url.rsplit("/", 1) == [store.rsplit("/", 1)[0], name]


def test_auditor(docs: list[dict[str, Any]]) -> None:
    auditor = component(docs, "Deployment", "auditor")
    assert auditor["spec"]["replicas"] == 1
    container = main_container(auditor)
    assert container["command"] == [
        "python",
        "-m",
        "services.audit",
        "--host",
        "0.0.0.0",
        "--port",
        "6066",
    ]
    (port,) = component(docs, "Service", "auditor")["spec"]["ports"]
    assert port["port"] == 6066
    assert port_number(container, port["targetPort"]) == 6066
    # Probed on its health server, which answers while it waits for Kafka.
    assert env_of(container)["SAGA_HEALTH_PORT"]["value"] == "8081"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert port_number(container, "health") == 8081


def test_no_per_replica_ids(docs: list[dict[str, Any]]) -> None:
    for workload in workloads(docs):
        for container in containers(workload):
            env = env_of(container)
            assert not PER_REPLICA_IDS & env.keys(), (
                f"{workload['metadata']['name']}/{container['name']} sets a per-replica id"
            )
            # Nor anything derived from the pod's identity.
            for name, var in env.items():
                assert "fieldRef" not in var.get("valueFrom", {}), f"{name} comes from a fieldRef"


def test_common_environment(docs: list[dict[str, Any]]) -> None:
    for workload in workloads(docs):
        for container in containers(workload):
            env = env_of(container)
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert env.keys() >= COMMON_ENV, f"{where} lacks {COMMON_ENV - env.keys()}"
            assert env["SAGA_DEFINITIONS"]["value"] == (
                "saga.definition.examples.order_placement:ORDER_PLACEMENT"
            )
            assert env["SAGA_LOG_FORMAT"]["value"] == "json"
            assert env["SAGA_PARTITIONS"]["value"] == "12"
            assert env["SAGA_REPLICATION_FACTOR"]["value"] == "3"
            assert env["SAGA_TOPIC_PREFIX"]["value"] == ""
            assert "secretKeyRef" in env["SAGA_DATABASE_URL"]["valueFrom"], where


def test_migration_job(docs: list[dict[str, Any]]) -> None:
    (job,) = by_kind(docs, "Job")
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "Never"
    commands = [c["command"] for c in containers(job)]
    assert ["saga", "db", "upgrade"] in commands, commands
    assert ["saga", "admin", "topics"] in commands, commands
    # Init containers run first and to completion: the schema, then the topics.
    assert spec["initContainers"][0]["command"] == ["saga", "db", "upgrade"]
    assert spec["containers"][0]["command"] == ["saga", "admin", "topics"]


def test_migration_is_a_helm_hook_by_default(manifests: dict[str, list[dict[str, Any]]]) -> None:
    docs = manifests["defaults"]
    (job,) = by_kind(docs, "Job")
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert hooks == ["pre-install", "pre-upgrade"]
    # A pre-install hook runs before the release's Secret exists: its Secret is a hook too,
    # made before the Job.
    (ref,) = {
        env["SAGA_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
        for env in map(env_of, containers(job))
    }
    secret = named(docs, "Secret", ref)
    annotations = secret["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == job["metadata"]["annotations"]["helm.sh/hook"]
    assert int(annotations["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    plain = manifests["external-secret"]
    (job,) = by_kind(plain, "Job")
    assert "helm.sh/hook" not in job["metadata"].get("annotations", {})


def test_secret_references_resolve(
    manifests: dict[str, list[dict[str, Any]]], docs: list[dict[str, Any]]
) -> None:
    external = docs is manifests["external-secret"]
    secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}
    for workload in workloads(docs):
        for container in containers(workload):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    continue
                if external:
                    assert ref["name"] == "saga-prod"
                    continue
                assert ref["name"] in secrets, f"{var['name']}: no Secret {ref['name']}"
                assert ref["key"] in secrets[ref["name"]]["stringData"], (
                    f"{var['name']}: Secret {ref['name']} has no key {ref['key']}"
                )


def test_prometheus_annotations(manifests: dict[str, list[dict[str, Any]]]) -> None:
    docs = manifests["defaults"]
    for name in ("coordinator", "api", *PARTICIPANTS):
        deployment = component(docs, "Deployment", name)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        port = int(annotations["prometheus.io/port"])
        assert port in {p["containerPort"] for p in main_container(deployment)["ports"]}
    for deployment in by_kind(manifests["external-secret"], "Deployment"):
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        assert "prometheus.io/scrape" not in annotations


def test_service_monitors(manifests: dict[str, list[dict[str, Any]]]) -> None:
    docs = manifests["scaled"]
    monitors = by_kind(docs, "ServiceMonitor")
    assert {m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors} == {
        "coordinator",
        "api",
        *PARTICIPANTS,
    }
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = by_kind(docs, "Service")
        (service,) = [s for s in services if selects(selector, s["metadata"]["labels"])]
        port_names = {p["name"] for p in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"


def test_services_select_pods(docs: list[dict[str, Any]]) -> None:
    for service in by_kind(docs, "Service"):
        selector = service["spec"]["selector"]
        (deployment,) = [d for d in by_kind(docs, "Deployment") if selects(selector, pod_labels(d))]
        for port in service["spec"]["ports"]:
            port_number(main_container(deployment), port["targetPort"])


def test_security_context_and_resources(docs: list[dict[str, Any]]) -> None:
    for workload in workloads(docs):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        tmp = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), where
            assert {"cpu", "memory"} <= container["resources"]["limits"].keys(), where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp, f"{where}: no writable /tmp"


def test_one_image_for_everything(docs: list[dict[str, Any]]) -> None:
    images = {c["image"] for w in workloads(docs) for c in containers(w)}
    assert images == {"saga-coordinator:0.1.0"}


# --- Compose ------------------------------------------------------------------------------


def test_vendored_compose_schema_is_unchanged() -> None:
    digest = hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest()
    assert digest == COMPOSE_SCHEMA_SHA256, "tests/deploy/compose-spec.json was edited"


def _compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_compose_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = sorted(_compose_validator().iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_compose_validation_catches_mistakes(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["coordinator"]["healthcheck"]["intervall"] = "5s"
    assert list(_compose_validator().iter_errors(broken))


def test_compose_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:16"
    assert services["kafka"]["image"] == "apache/kafka:4.1.2"
    saga = {name for name, s in services.items() if name not in {"postgres", "kafka"}}
    assert {services[name]["image"] for name in saga} == {"${SAGA_IMAGE:-saga-coordinator:0.1.0}"}
    assert all("build" in services[name] for name in saga)


def test_compose_replicas(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["coordinator"]["deploy"]["replicas"] >= 2
    assert services["coordinator"]["deploy"]["replicas"] == 3
    assert services["api"]["deploy"]["replicas"] == 2
    for name in PARTICIPANTS:
        assert services[name]["deploy"]["replicas"] == 2
    for name, service in services.items():
        if service.get("deploy", {}).get("replicas", 1) > 1:
            assert "container_name" not in service, f"{name}: replicas need generated names"
            for port in service.get("ports", []):
                host = str(port).rsplit(":", 1)[0]
                assert "-" in host, f"{name}: {port} publishes one host port for many replicas"


def test_compose_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    serves_http = {"api", "auditor", "coordinator", *PARTICIPANTS}
    for name in serves_http | {"postgres", "kafka"}:
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
        assert services[name]["healthcheck"]["test"], f"{name}'s healthcheck has no test"
    for name in {"coordinator", "auditor", *PARTICIPANTS}:
        assert services[name]["environment"]["SAGA_HEALTH_PORT"] == "8081"
        assert services[name]["environment"]["SAGA_HEALTH_HOST"] == "0.0.0.0"
        assert "http://127.0.0.1:8081/readyz" in " ".join(services[name]["healthcheck"]["test"])
    assert "http://127.0.0.1:8080/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    # What others wait for with service_healthy has a healthcheck.
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits on {dependency}"


def test_compose_migration(compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate = services["migrate"]
    script = " ".join(migrate["command"])
    assert "saga db upgrade" in script
    assert "saga admin topics" in script
    assert script.index("saga db upgrade") < script.index("saga admin topics")
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name, service in services.items():
        if name in {"postgres", "kafka", "migrate"}:
            continue
        condition = service["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name


def test_compose_environment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        if name in {"postgres", "kafka"}:
            continue
        env = service["environment"]
        assert env.keys() >= COMMON_ENV, f"{name} lacks {COMMON_ENV - env.keys()}"
        assert not PER_REPLICA_IDS & env.keys(), f"{name} sets a per-replica id"
        assert service["read_only"] is True
        assert service["user"] == "10001:10001"
        assert "no-new-privileges:true" in service["security_opt"]
    assert services["api"]["environment"]["SAGA_API_HOST"] == "0.0.0.0"
    assert services["api"]["environment"]["SAGA_API_TOKENS"].startswith("${SAGA_API_TOKENS:?")
    assert services["coordinator"]["stop_grace_period"] == "60s"
    urls = {services[name]["environment"]["SAGA_DATABASE_URL"] for name in PARTICIPANTS}
    assert {url.rsplit("/", 1)[1] for url in urls} == set(PARTICIPANTS)


def test_compose_runs_what_the_chart_runs(
    compose: dict[str, Any], manifests: dict[str, list[dict[str, Any]]]
) -> None:
    docs = manifests["defaults"]
    services = compose["services"]
    for name in ("coordinator", "api", "auditor", *PARTICIPANTS):
        chart = main_container(component(docs, "Deployment", name))["command"]
        assert services[name]["command"] == chart, name
