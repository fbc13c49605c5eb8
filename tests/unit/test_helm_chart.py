"""The Helm chart in deploy/helm/centrifuge-asgi, rendered by tests/helm_render.py (Helm
itself is not installable here): every manifest loads as YAML with the kind, apiVersion
and fields Kubernetes requires, the names and ports agree between objects, the
environment the pods get is one the config loader accepts, and the values docs/deploy.md
passes to ``helm install`` reach the pod spec.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from centrifuge_asgi.config import load_config
from tests.helm_render import Chart, RenderError, Unsupported, documents, parse, split_nodes

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "centrifuge-asgi"
KINDS = {
    "Deployment": "apps/v1",
    "Service": "v1",
    "Secret": "v1",
    "ConfigMap": "v1",
    "PodDisruptionBudget": "policy/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "ServiceMonitor": "monitoring.coreos.com/v1",
}
SECRETS = ["secrets.tokenHmacSecretKey=t0ken", "secrets.apiKey=ap1"]
REDIS = ["engine.redis.address=redis-master:6379", *SECRETS]


def documented_sets() -> list[str]:
    """The ``--set`` values of the ``helm install`` command in docs/deploy.md."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    command = re.search(r"^\$ (helm install \S+ deploy/helm/.*)$", text, re.M)
    assert command, "docs/deploy.md has no helm install command"
    words = shlex.split(command.group(1).replace("\\\n", " "))
    return [words[n + 1] for n, word in enumerate(words) if word == "--set"]


def render(sets: list[str], overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return documents(Chart(CHART).render(overrides, sets))


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def the(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs)[kind]
    assert len(found) == 1, kind
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = the(docs, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    result: dict[str, Any] = pod["containers"][0]
    return result


def pod_environment(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The container's env with secretKeyRefs resolved from the rendered Secret."""
    secret = the(docs, "Secret")
    env = {}
    for item in container(docs)["env"]:
        if "value" in item:
            assert isinstance(item["value"], str), item  # Kubernetes wants strings
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


def check_structure(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        assert KINDS[doc["kind"]] == doc["apiVersion"], doc["kind"]
        name = doc["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "centrifuge-asgi"
    deployment = the(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    main = container(docs)
    assert main["image"] and main["name"]
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert set(ports) == {"external", "internal"}
    for probe in ("readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"] == {"path": "/health", "port": "internal"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    config_map = the(docs, "ConfigMap")
    mounts = {m["mountPath"]: volumes[m["name"]] for m in main["volumeMounts"]}
    assert set(mounts) == {"/centrifugo", "/tmp"}
    # the image's CMD reads /centrifugo/config.json
    assert mounts["/centrifugo"]["configMap"]["name"] == config_map["metadata"]["name"]
    # a writable /tmp under readOnlyRootFilesystem (the workers' metrics directory)
    assert mounts["/tmp"] == {"name": "tmp", "emptyDir": {}}
    json.loads(config_map["data"]["config.json"])
    for service in by_kind(docs)["Service"]:
        assert service["spec"]["selector"].items() <= pod_labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports
    for other in ("PodDisruptionBudget", "ServiceMonitor"):
        for doc in by_kind(docs).get(other, []):
            assert doc["spec"]["selector"]["matchLabels"]


def accepted_by_the_loader(env: dict[str, str]) -> Any:
    config = load_config(None, env=env)
    unknown = [w for w in config.warnings if "unknown" in w]
    assert not unknown, unknown
    return config


def test_documented_install_reaches_the_pod_spec() -> None:
    sets = documented_sets()
    values = dict(s.split("=", 1) for s in sets)
    docs = render(sets)
    check_structure(docs)
    kinds = by_kind(docs)
    assert set(kinds) == {"Deployment", "Service", "Secret", "ConfigMap", "PodDisruptionBudget"}
    env = pod_environment(docs)
    config = accepted_by_the_loader(env)
    assert config.engine.type == "redis"
    assert config.engine.redis.address == [values["engine.redis.address"]]
    assert config.client.token.hmac_secret_key == values["secrets.tokenHmacSecretKey"]
    assert config.http_api.key == values["secrets.apiKey"]
    assert config.health.enabled and config.prometheus.enabled
    assert str(config.http_server.internal_port) == "9000" and config.http_server.port == 8000
    deployment = the(docs, "Deployment")
    assert deployment["spec"]["replicas"] == int(values.get("replicaCount", 2))
    if "image.repository" in values:
        assert container(docs)["image"].startswith(values["image.repository"] + ":")


def test_every_documented_knob_reaches_the_pod_spec() -> None:
    docs = render(
        [
            *REDIS,
            "replicaCount=3",
            "workers=2",
            "image.repository=registry.example/centrifuge-asgi",
            "image.tag=1.2.3",
            "engine.redis.prefix=chat",
            "shutdownTimeout=20",
            "terminationGracePeriodSeconds=30",
            "preStopDelay=0",
            "service.port=8100",
            "internalService.port=9100",
        ],
        {"env": {"CENTRIFUGO_LOG_LEVEL": "debug"}, "config": {"client": {"insecure": True}}},
    )
    check_structure(docs)
    main = container(docs)
    pod = the(docs, "Deployment")["spec"]["template"]["spec"]
    assert main["image"] == "registry.example/centrifuge-asgi:1.2.3"
    assert the(docs, "Deployment")["spec"]["replicas"] == 3
    assert pod["terminationGracePeriodSeconds"] == 30 and "lifecycle" not in main
    assert {p["name"]: p["containerPort"] for p in main["ports"]} == {
        "external": 8100,
        "internal": 9100,
    }
    config = accepted_by_the_loader(pod_environment(docs))
    assert config.http_server.workers == 2 and config.shutdown.timeout == 20.0
    assert config.engine.redis.prefix == "chat" and config.log.level == "debug"
    assert config.http_server.port == 8100 and str(config.http_server.internal_port) == "9100"
    mounted = json.loads(the(docs, "ConfigMap")["data"]["config.json"])
    assert mounted["client"]["insecure"] is True


def test_default_pre_stop_delay_and_security_context() -> None:
    docs = render(REDIS)
    main = container(docs)
    assert main["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    pod = the(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user


def test_nats_broker_values() -> None:
    docs = render(["engine.type=nats", "engine.nats.url=nats://nats:4222", *SECRETS])
    check_structure(docs)
    config = accepted_by_the_loader(pod_environment(docs))
    assert config.broker.enabled and config.broker.type == "nats"
    assert config.broker.nats.url == "nats://nats:4222"
    assert "redis_address" not in the(docs, "Secret")["data"]


def test_autoscaling_monitoring_and_existing_secret() -> None:
    docs = render(
        [
            "engine.redis.address=r:6379",
            "existingSecret=my-keys",
            "autoscaling.enabled=true",
            "autoscaling.maxReplicas=7",
            "metrics.serviceMonitor.enabled=true",
            "podDisruptionBudget.enabled=false",
        ]
    )
    kinds = by_kind(docs)
    assert "Secret" not in kinds and "PodDisruptionBudget" not in kinds
    assert "replicas" not in the(docs, "Deployment")["spec"]  # the HPA owns it
    hpa = the(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 7
    assert hpa["spec"]["scaleTargetRef"]["name"] == the(docs, "Deployment")["metadata"]["name"]
    monitor = the(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "internal"
    internal = [s for s in kinds["Service"] if s["metadata"]["name"].endswith("-internal")]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= internal[0]["metadata"]["labels"].items()
    )
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"] for e in container(docs)["env"] if "valueFrom" in e
    }
    assert refs == {"my-keys"}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (SECRETS, "engine.redis.address is required"),
        (["engine.redis.address=r:6379", "secrets.apiKey=a"], "secrets.tokenHmacSecretKey"),
        (["engine.type=memory", *SECRETS], "engine.type memory"),
    ],
)
def test_missing_or_unsafe_values_fail(sets: list[str], message: str) -> None:
    with pytest.raises(RenderError, match=re.escape(message)):
        render(sets)


def test_memory_engine_with_one_replica_renders() -> None:
    docs = render(["engine.type=memory", "replicaCount=1", *SECRETS])
    config = accepted_by_the_loader(pod_environment(docs))
    assert config.engine.type == "memory"
    # a budget of one available pod out of one would block every node drain
    assert "PodDisruptionBudget" not in by_kind(docs)
    scaled = render(
        ["engine.redis.address=redis:6379", "replicaCount=1", "autoscaling.enabled=true", *SECRETS]
    )
    assert "PodDisruptionBudget" in by_kind(scaled)


def test_the_renderer_refuses_what_it_does_not_know() -> None:
    with pytest.raises(Unsupported):
        Chart.run(Chart.__new__(Chart), parse(split_nodes("{{ lookup 1 }}"))[0], {}, {})
