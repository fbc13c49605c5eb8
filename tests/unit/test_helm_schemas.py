"""Every manifest the Helm chart renders (tests/helm_render.py) for the documented values
and for the engine, autoscaling and monitoring variants passes Kubernetes' own OpenAPI
schemas in strict mode (an unknown field fails), with the schemas kubernetes-validate
bundles (no network). The Prometheus Operator's ServiceMonitor is a custom resource
that kubernetes-validate has no schema for: it is skipped there, by name and with the
reason, and checked here instead against the fields of its CRD that the chart uses and
against the Service it must select.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import kubernetes_validate
import pytest

from tests.unit.test_helm_chart import CHART, REDIS, SECRETS, documented_sets, render

# The newest Kubernetes whose schemas the locked kubernetes-validate bundles, and the
# oldest: the chart's apiVersions (policy/v1, autoscaling/v2) exist in both.
VERSIONS = ("1.37", "1.25")

# Kinds Kubernetes' schemas do not describe, and why they are checked elsewhere.
CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): (
        "a Prometheus Operator CRD: kubernetes-validate bundles only built-in kinds; "
        "check_service_monitor validates it"
    ),
}

# Fields of the ServiceMonitor CRD (monitoring.coreos.com/v1) that a chart like this
# one may set; anything else is a typo as far as this chart is concerned.
MONITOR_SPEC_FIELDS = {
    "endpoints",
    "selector",
    "namespaceSelector",
    "jobLabel",
    "targetLabels",
    "podTargetLabels",
    "sampleLimit",
}
MONITOR_ENDPOINT_FIELDS = {
    "port",
    "path",
    "scheme",
    "interval",
    "scrapeTimeout",
    "honorLabels",
    "relabelings",
    "metricRelabelings",
}
PROMETHEUS_DURATION = re.compile(r"(\d+(ms|[smhdwy]))+")

# Non-empty values for every list/map knob that values.yaml passes through toYaml.
PASSTHROUGH: dict[str, Any] = {
    "imagePullSecrets": [{"name": "registry-credentials"}],
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "realtime", "effect": "NoSchedule"}
    ],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {
                            "matchLabels": {"app.kubernetes.io/name": "centrifuge-asgi"}
                        },
                    },
                }
            ]
        }
    },
    "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    "podAnnotations": {"example.com/team": "realtime"},
    "podLabels": {"team": "realtime"},
    "env": {"CENTRIFUGO_LOG_LEVEL": "debug", "CENTRIFUGO_CLIENT_PING_INTERVAL": 20},
    "metrics": {"serviceMonitor": {"additionalLabels": {"release": "prometheus"}}},
}
MONITORED = [
    "autoscaling.enabled=true",
    "metrics.serviceMonitor.enabled=true",
    "podDisruptionBudget.enabled=true",
]

VARIANTS: dict[str, tuple[list[str], dict[str, Any] | None]] = {
    "documented install": (documented_sets(), None),
    "chart defaults with secrets": (REDIS, None),
    "redis, HPA, PDB, ServiceMonitor, every pass-through value": (
        [
            *REDIS,
            *MONITORED,
            "workers=2",
            "engine.redis.prefix=chat",
            "podDisruptionBudget.minAvailable=50%",
            "service.type=LoadBalancer",
            "preStopDelay=0",
        ],
        PASSTHROUGH,
    ),
    "nats, HPA, PDB, ServiceMonitor": (
        ["engine.type=nats", "engine.nats.url=nats://nats:4222", *SECRETS, *MONITORED],
        None,
    ),
    "existing Secret": (["engine.redis.address=r:6379", "existingSecret=my-keys"], None),
    "memory engine, one replica": (["engine.type=memory", "replicaCount=1", *SECRETS], None),
}


def validate(doc: dict[str, Any], version: str) -> str:
    """Validate one manifest: with Kubernetes' strict schema, or as a custom resource.
    Returns what validated it."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CUSTOM_RESOURCES:
        # skipped there on purpose: prove that kubernetes-validate really lacks it
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(doc, version, strict=True)
        return "custom resource: " + CUSTOM_RESOURCES[key]
    return "kubernetes " + str(kubernetes_validate.validate(doc, version, strict=True))


def strict_core(doc: dict[str, Any], version: str = VERSIONS[0]) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def check_service_monitor(monitor: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    """The ServiceMonitor's shape (the CRD fields the chart may use), its metadata and
    selector (Kubernetes' own ObjectMeta and LabelSelector schemas, borrowed from a
    ConfigMap and a PodDisruptionBudget), and what it points at: its selector picks
    exactly the internal Service, and every endpoint's port is one of that Service's
    port names, which targets the container port that serves /metrics."""
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}, set(monitor)
    strict_core({"apiVersion": "v1", "kind": "ConfigMap", "metadata": monitor["metadata"]})
    spec = monitor["spec"]
    assert set(spec) <= MONITOR_SPEC_FIELDS, set(spec) - MONITOR_SPEC_FIELDS
    selector = spec["selector"]
    strict_core(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "selector-check"},
            "spec": {"selector": selector},
        }
    )
    assert set(selector) == {"matchLabels"} and selector["matchLabels"], selector
    services = [doc for doc in docs if doc["kind"] == "Service"]
    namespace = monitor["metadata"].get("namespace")
    selected = [
        service
        for service in services
        if service["metadata"].get("namespace") == namespace
        and selector["matchLabels"].items() <= service["metadata"]["labels"].items()
    ]
    assert len(selected) == 1, [s["metadata"]["name"] for s in selected]
    service = selected[0]
    port_names = {port["name"]: port for port in service["spec"]["ports"]}
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    metrics_port = next(
        item["value"]
        for item in container["env"]
        if item["name"] == "CENTRIFUGO_HTTP_SERVER_INTERNAL_PORT"
    )
    container_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert isinstance(spec["endpoints"], list) and spec["endpoints"]
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= MONITOR_ENDPOINT_FIELDS, set(endpoint) - MONITOR_ENDPOINT_FIELDS
        assert endpoint["port"] in port_names, (endpoint["port"], sorted(port_names))
        target = port_names[endpoint["port"]]["targetPort"]
        assert str(container_ports[target]) == metrics_port  # where /metrics is served
        assert endpoint.get("path", "/metrics") == "/metrics"
        if "interval" in endpoint:
            assert PROMETHEUS_DURATION.fullmatch(str(endpoint["interval"])), endpoint


@pytest.mark.parametrize(
    ("variant", "version"),
    [(variant, VERSIONS[0]) for variant in VARIANTS]
    # the oldest version for the variants that render every kind
    + [(variant, VERSIONS[1]) for variant in list(VARIANTS)[2:4]],
)
def test_every_rendered_manifest_passes_the_schemas(variant: str, version: str) -> None:
    sets, overrides = VARIANTS[variant]
    docs = render(sets, overrides)
    validated = {f"{doc['kind']}/{doc['metadata']['name']}": validate(doc, version) for doc in docs}
    assert all(v.startswith(("kubernetes 1.", "custom resource")) for v in validated.values())
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            check_service_monitor(doc, docs)


def test_the_variants_cover_every_template() -> None:
    """Each template of the chart renders a manifest in at least one variant, so no
    template escapes the schemas."""
    from tests.helm_render import Chart

    chart = Chart(CHART)
    covered: set[str] = set()
    for sets, overrides in VARIANTS.values():
        rendered = chart.render(overrides, sets)
        covered |= {name for name, text in rendered.items() if text.strip()}
    covered.discard("NOTES.txt")  # printed by helm install, not applied
    templates = {p.name for p in (CHART / "templates").glob("*.yaml")}
    assert templates == covered, templates - covered


def test_the_service_monitor_is_validated_structurally() -> None:
    docs = render([*REDIS, *MONITORED])
    monitors = [doc for doc in docs if doc["kind"] == "ServiceMonitor"]
    assert len(monitors) == 1
    assert validate(monitors[0], VERSIONS[0]).startswith("custom resource: a Prometheus")


# ------------------------------------------------- the checks reject broken manifests


def deployment_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    result: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return result


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("typo", "'imagePullPolicyy' was unexpected"),
        ("port as text", "'8000' is not of type 'integer'"),
        ("probe without handler", "'httpGett' was unexpected"),
        ("misplaced tolerations", "'tolerations' was unexpected"),
    ],
)
def test_a_broken_deployment_is_rejected(breakage: str, message: str) -> None:
    docs = render(REDIS)
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    strict_core(deployment)  # valid as rendered
    broken = copy.deepcopy(deployment)
    main = broken["spec"]["template"]["spec"]["containers"][0]
    if breakage == "typo":
        main["imagePullPolicyy"] = main.pop("imagePullPolicy")
    elif breakage == "port as text":
        main["ports"][0]["containerPort"] = "8000"
    elif breakage == "probe without handler":
        main["readinessProbe"]["httpGett"] = main["readinessProbe"].pop("httpGet")
    else:  # a pod-level field one level too deep, as a wrong nindent would put it
        main["tolerations"] = [{"key": "k", "operator": "Exists"}]
    with pytest.raises(kubernetes_validate.ValidationError, match=re.escape(message)):
        strict_core(broken)


def test_strict_mode_is_what_rejects_unknown_fields() -> None:
    service = next(doc for doc in render(REDIS) if doc["kind"] == "Service")
    broken = copy.deepcopy(service)
    broken["spec"]["selectors"] = broken["spec"].pop("selector")
    kubernetes_validate.validate(broken, VERSIONS[0], strict=False)  # lax: accepted
    with pytest.raises(kubernetes_validate.ValidationError, match="'selectors' was unexpected"):
        strict_core(broken)


def test_an_unknown_kind_is_not_skipped() -> None:
    doc = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate(doc, VERSIONS[0])


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("port name", "'metrics'"),
        ("selector", "[]"),
        ("typo", "endpoint"),
        ("interval", "interval"),
        ("metadata typo", "'label' was unexpected"),
    ],
)
def test_a_broken_service_monitor_is_rejected(breakage: str, message: str) -> None:
    docs = render([*REDIS, *MONITORED])
    monitor = next(doc for doc in docs if doc["kind"] == "ServiceMonitor")
    check_service_monitor(monitor, docs)  # valid as rendered
    endpoint = monitor["spec"]["endpoints"][0]
    if breakage == "port name":
        endpoint["port"] = "metrics"
    elif breakage == "selector":
        monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "client"
    elif breakage == "typo":
        endpoint["endpoint"] = endpoint.pop("path")
    elif breakage == "interval":
        endpoint["interval"] = "30 seconds"
    else:
        monitor["metadata"]["label"] = monitor["metadata"].pop("labels")
    with pytest.raises(
        (AssertionError, kubernetes_validate.ValidationError), match=re.escape(message)
    ):
        check_service_monitor(monitor, docs)
