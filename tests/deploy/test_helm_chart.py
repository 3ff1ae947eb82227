"""The Helm chart (deploy/helm/kube-proxy-pipeline) as a cluster would get it, without a
cluster: `helm lint`, `helm template` with the default values and with a SASL_SSL,
several-workers values file, every rendered object validated strictly against the
Kubernetes 1.28 and 1.33 OpenAPI schemas (kubernetes-validate ships them; no download), the
operator objects (PrometheusRule, VMRule, PodMonitor, VMPodScrape: no schema there) against
the structure their operators read, and every container command parsed by kpp's own
argument parser with the option values resolved as the stage would.

helm is the pinned binary `make tools` installs into .kpp/tools; without it these tests FAIL."""

from __future__ import annotations

import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "kube-proxy-pipeline"
HELM = REPO / ".kpp" / "tools" / "helm"
SASL_VALUES = CHART / "ci" / "sasl-values.yaml"
KUBERNETES_VERSIONS = ("1.28", "1.33")
DEFAULT_RUNBOOK_BASE = "https://github.com/kube-proxy-pipeline/kube-proxy-pipeline/blob/main/docs/runbook.md"
OPERATOR_KINDS = {"PrometheusRule", "VMRule", "PodMonitor", "VMPodScrape"}


# -- rendering -------------------------------------------------------------------------------------

class _UniqueKeyLoader(yaml.SafeLoader):
    """A duplicate key in a rendered mapping is an error (kubectl rejects it), not a silent overwrite."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    duplicates = sorted({k for k in keys if keys.count(k) > 1}, key=str)
    if duplicates:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate key(s) {duplicates}", node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    if not HELM.is_file():
        pytest.fail(f"helm is not installed at {HELM.relative_to(REPO)}: run `make tools` (make test does)")
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def render(*extra: str) -> list[dict[str, Any]]:
    out = helm("template", "kpp", str(CHART), "--namespace", "monitoring", *extra).stdout
    return [doc for doc in yaml.load_all(out, Loader=_UniqueKeyLoader) if doc]


RENDERINGS = {"default": (), "sasl": ("-f", str(SASL_VALUES))}


@pytest.fixture(scope="module", params=sorted(RENDERINGS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(*RENDERINGS[request.param])


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def workload(docs: list[dict], component: str) -> dict:
    found = [d for d in docs if d["kind"] in ("DaemonSet", "Deployment", "Job")
             and d["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    assert len(found) == 1, f"{component}: {len(found)} workloads"
    return found[0]


def container(docs: list[dict], component: str) -> dict:
    return workload(docs, component)["spec"]["template"]["spec"]["containers"][0]


def values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


# -- helm itself -----------------------------------------------------------------------------------

def test_helm_lint_strict_with_default_and_sasl_values() -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "-f", str(SASL_VALUES))


def test_packaged_chart_carries_the_alert_rules_and_dashboards_of_deploy(tmp_path: Path) -> None:
    """files/alerts and files/dashboards link to deploy/alerts and deploy/grafana/dashboards:
    the package must hold their contents, identical, so there is no copy to keep in step."""
    helm("package", str(CHART), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("kube-proxy-pipeline-*.tgz")
    with tarfile.open(package) as tar:
        packed = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    sources = {f"files/alerts/{p.name}": p for p in (REPO / "deploy" / "alerts").glob("*.yaml")}
    sources |= {f"files/dashboards/{p.name}": p for p in (REPO / "deploy" / "grafana" / "dashboards").glob("*.json")}
    assert len(sources) >= 3
    for name, source in sources.items():
        assert packed.get(name) == source.read_bytes(), f"{name} missing or different in the package"


# -- every object, strictly ------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_every_object_is_valid_for_kubernetes_1_28_and_1_33(name: str, version: str) -> None:
    """Rendered for that Kubernetes version (the chart's kubeVersion must admit it) and
    validated against its schemas, unknown fields refused."""
    docs = render(*RENDERINGS[name], "--kube-version", f"v{version}.0")
    kinds = {d["kind"] for d in docs}
    assert {"DaemonSet", "Deployment", "PodDisruptionBudget", "Job", "ConfigMap"} <= kinds
    if name == "sasl":
        assert OPERATOR_KINDS <= kinds
    for doc in docs:
        if doc["kind"] in OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']} invalid for {version}: {exc}")


def test_chart_refuses_a_kubernetes_older_than_1_28() -> None:
    result = helm("template", "kpp", str(CHART), "--kube-version", "v1.27.0", check=False)
    assert result.returncode != 0 and "kubeVersion" in result.stderr


# The structure the operators read (their CRDs are not in kubernetes-validate): the fields this
# chart writes, nothing unknown (additionalProperties false), the types the CRDs declare.
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {"type": "object", "required": ["name", "namespace", "labels"], "additionalProperties": False,
             "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                            "namespace": {"type": "string"}, "labels": _STR_MAP}}
_RULE = {"type": "object", "required": ["expr"], "additionalProperties": False,
         "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
         "properties": {"alert": {"type": "string"}, "record": {"type": "string"},
                        "expr": {"type": "string", "minLength": 1}, "for": {"type": "string"},
                        "keep_firing_for": {"type": "string"}, "labels": _STR_MAP, "annotations": _STR_MAP}}
_RULES_SPEC = {"type": "object", "required": ["groups"], "additionalProperties": False, "properties": {
    "groups": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["name", "rules"], "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "interval": {"type": "string"},
                       "rules": {"type": "array", "minItems": 1, "items": _RULE}}}}}}
_RELABEL = {"type": "object", "additionalProperties": False, "properties": {
    "sourceLabels": {"type": "array", "items": {"type": "string"}}, "targetLabel": {"type": "string"},
    "regex": {"type": "string"}, "replacement": {"type": "string"}, "action": {"type": "string"}}}


def _scrape_spec(relabel_key: str) -> dict:
    return {"type": "object", "required": ["selector", "podMetricsEndpoints"], "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "additionalProperties": False, "properties": {
                    "matchLabels": _STR_MAP,
                    "matchExpressions": {"type": "array", "items": {
                        "type": "object", "required": ["key", "operator"], "additionalProperties": False,
                        "properties": {"key": {"type": "string"}, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                                       "values": {"type": "array", "items": {"type": "string"}}}}}}},
                "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["port"], "additionalProperties": False,
                    "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                   "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                   relabel_key: {"type": "array", "items": _RELABEL}}}}}}


OPERATOR_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): _RULES_SPEC,
    ("operator.victoriametrics.com/v1beta1", "VMRule"): _RULES_SPEC,
    ("monitoring.coreos.com/v1", "PodMonitor"): _scrape_spec("relabelings"),
    ("operator.victoriametrics.com/v1beta1", "VMPodScrape"): _scrape_spec("relabelConfigs"),
}


def test_operator_objects_have_the_structure_their_operators_read() -> None:
    docs = render(*RENDERINGS["sasl"])
    operator_docs = [d for d in docs if d["kind"] in OPERATOR_KINDS]
    assert {d["kind"] for d in operator_docs} == OPERATOR_KINDS
    pods = {c: workload(docs, c)["spec"]["template"] for c in ("producer", "stream", "sink")}
    for doc in operator_docs:
        spec_schema = OPERATOR_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        assert spec_schema, f"{doc['kind']} has apiVersion {doc['apiVersion']}"
        jsonschema.validate(doc, {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
                                  "additionalProperties": False,
                                  "properties": {"apiVersion": {}, "kind": {}, "metadata": _METADATA,
                                                 "spec": spec_schema}})
        if doc["kind"] in ("PodMonitor", "VMPodScrape"):
            # The selector picks exactly the three stages' pods, each of which has the port.
            selector = doc["spec"]["selector"]
            (expression,) = selector["matchExpressions"]
            assert sorted(expression["values"]) == sorted(pods)
            for component, pod in pods.items():
                labels = pod["metadata"]["labels"]
                assert selector["matchLabels"].items() <= labels.items()
                assert labels[expression["key"]] == component
                ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
                assert doc["spec"]["podMetricsEndpoints"][0]["port"] in ports


# -- every command, through kpp's own parser -------------------------------------------------------

def stage_options(subcommand: tuple[str, ...]):  # noqa: ANN201
    from kpp.topics import OPTIONS as TOPICS
    from producers.cli_produce import OPTIONS as PRODUCE
    from sinks.cli import OPTIONS as SINK
    from streams.cli import OPTIONS as STREAM

    return {("produce",): PRODUCE, ("stream",): STREAM, ("sink",): SINK, ("topics", "ensure"): TOPICS}[subcommand]


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), text)


def test_every_container_command_parses_with_the_kpp_parser(rendered, tmp_path: Path) -> None:
    from runtime.options import load_toml, resolve
    from kpp.cli import build_parser

    name, docs = rendered
    parser = build_parser()
    seen: set[str] = set()
    for doc in docs:
        if doc["kind"] not in ("DaemonSet", "Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            if c["command"][0] != "kpp":
                assert c["name"] == "spool-owner", f"{doc['kind']} {c['name']} runs no kpp command"
                continue
            env = {e["name"]: e.get("value", "10.1.2.3") for e in c.get("env", [])}
            argv = [expand(a, env) for a in c["command"][1:] + c.get("args", [])]
            for leftover in (a for a in argv if "$(" in a):
                pytest.fail(f"{name}: {c['name']}: {leftover} refers to a variable the container does not set")
            try:
                args = parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"{name}: {doc['kind']} {c['name']}: `kpp {' '.join(argv)}` is refused by kpp's parser")
            subcommand = tuple(a for a in c["command"][1:])
            file_values = {}
            if getattr(args, "config", None):  # the producer's ConfigMap, as the pod mounts it
                config_map = next(d for d in docs if d["kind"] == "ConfigMap" and "producer.toml" in d["data"])
                (tmp_path / "producer.toml").write_text(config_map["data"]["producer.toml"])
                file_values = load_toml(str(tmp_path / "producer.toml"))
            resolved = resolve(stage_options(subcommand), args, file_values, env={})
            seen.add(" ".join(subcommand))
            if subcommand == ("stream",):
                from streams.cli import settings_from  # the worker's own checks (windows, SLO window)

                settings_from(args)
            assert resolved  # every value converted as the stage converts it (raises otherwise)
    assert seen == {"produce", "stream", "sink", "topics ensure"}


# -- what each workload promises -------------------------------------------------------------------

def test_producer_metrics_bind_to_the_node_ip_by_default() -> None:
    docs = render()
    ds = workload(docs, "producer")
    c = container(docs, "producer")
    env = {e["name"]: e for e in c["env"]}
    assert env["HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    port = values()["producer"]["metrics"]["port"]
    assert f"--listen=$(HOST_IP):{port}" in c["args"]
    assert c["ports"] == [{"name": "metrics", "containerPort": port}]
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # opt-out: every address of the node
    c = container(render("--set", "producer.metrics.bindHostIP=false"), "producer")
    assert f"--listen=0.0.0.0:{port}" in c["args"]


def test_every_pod_runs_under_the_runtime_default_seccomp_profile_as_non_root() -> None:
    docs = render(*RENDERINGS["sasl"])
    for component in ("producer", "stream", "sink", "topics"):
        pod = workload(docs, component)["spec"]["template"]["spec"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, component
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            assert c["securityContext"]["runAsNonRoot"] is True
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["resources"]["limits"]["memory"]


def test_stream_probes_and_metrics_on_its_listen_port() -> None:
    docs = render()
    c = container(docs, "stream")
    port = values()["stream"]["listenPort"]
    assert port == 9813
    assert f"--listen=0.0.0.0:{port}" in c["args"]
    assert c["ports"] == [{"name": "metrics", "containerPort": port}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert workload(docs, "stream")["kind"] == "Deployment"
    (pdb,) = [d for d in by_kind(docs, "PodDisruptionBudget") if d["metadata"]["name"].endswith("-stream")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= \
        workload(docs, "stream")["spec"]["template"]["metadata"]["labels"].items()


def test_sink_liveness_is_healthz_which_stays_up_while_the_store_is_down_readiness_is_readyz() -> None:
    c = container(render(), "sink")
    port = values()["sink"]["listenPort"]
    assert f"--listen=0.0.0.0:{port}" in c["args"]
    assert c["ports"] == [{"name": "metrics", "containerPort": port}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_more_stream_workers_than_partitions_is_refused() -> None:
    result = helm("template", "kpp", str(CHART), "--set", "stream.replicas=5", "--set", "topics.partitions=4",
                  check=False)
    assert result.returncode != 0
    assert "stream.replicas (5) must not exceed topics.partitions (4)" in result.stderr
    docs = render("--set", "stream.replicas=4", "--set", "topics.partitions=4")
    assert workload(docs, "stream")["spec"]["replicas"] == 4


def test_topics_job_runs_before_install_and_upgrade_with_the_workers_partitions() -> None:
    docs = render(*RENDERINGS["sasl"])
    job = workload(docs, "topics")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["kpp", "topics", "ensure"]
    sasl = yaml.safe_load(SASL_VALUES.read_text())
    assert f"--partitions={sasl['topics']['partitions']}" in c["args"]
    assert f"--partitions={sasl['topics']['partitions']}" in container(docs, "stream")["args"]
    assert f"--topic-prefix={sasl['topics']['prefix']}" in c["args"]
    # a mismatched partition count (exit 2) fails the Job at once instead of retrying
    from kafka_io.admin import TopicPartitionMismatch

    (rule,) = job["spec"]["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [TopicPartitionMismatch.exit_code]


def test_kafka_secrets_are_mounted_files_never_values() -> None:
    docs = render(*RENDERINGS["sasl"])
    for component in ("producer", "stream", "sink", "topics"):
        pod = workload(docs, component)["spec"]["template"]["spec"]
        c = pod["containers"][0]
        env = {e["name"]: e for e in c["env"]}
        assert env["KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert "KAFKA_SASL_PASSWORD" not in env
        assert env["KAFKA_SASL_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "kpp-kafka-user", "key": "username"}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for var, secret in (("KAFKA_SASL_PASSWORD_FILE", "kpp-kafka-user"), ("KAFKA_SSL_CAFILE", "kafka-cluster-ca-cert"),
                            ("KAFKA_SSL_CERTFILE", "kpp-kafka-client-tls"), ("KAFKA_SSL_KEYFILE", "kpp-kafka-client-tls")):
            path = Path(env[var]["value"])
            volume = volumes[mounts[str(path.parent)]]
            assert volume["secret"]["secretName"] == secret
            assert path.name in {item["path"] for item in volume["secret"]["items"]}


def test_sasl_without_a_password_secret_is_refused() -> None:
    result = helm("template", "kpp", str(CHART), "--set", "kafka.securityProtocol=SASL_SSL",
                  "--set", "kafka.sasl.username=kpp", check=False)
    assert result.returncode != 0
    assert "kafka.sasl.passwordSecret.name" in result.stderr


def test_alert_rules_are_deploy_alerts_with_the_runbook_base_replaced() -> None:
    sasl_base = yaml.safe_load(SASL_VALUES.read_text())["alerts"]["runbookBaseUrl"]
    docs = render(*RENDERINGS["sasl"])
    sources = sorted((REPO / "deploy" / "alerts").glob("*.yaml"))
    for kind in ("PrometheusRule", "VMRule"):
        objects = by_kind(docs, kind)
        assert len(objects) == len(sources)
        rendered_groups = [g for o in objects for g in o["spec"]["groups"]]
        expected = [g for p in sources
                    for g in yaml.safe_load(p.read_text().replace(DEFAULT_RUNBOOK_BASE, sasl_base))["groups"]]
        assert sorted(rendered_groups, key=lambda g: g["name"]) == sorted(expected, key=lambda g: g["name"])
        alerts = [r for g in rendered_groups for r in g["rules"] if "alert" in r]
        assert alerts
        for rule in alerts:
            assert rule["annotations"]["runbook_url"] == f"{sasl_base}#{rule['alert'].lower()}"
    # default base: the project's runbook
    docs = render("--set", "alerts.prometheusRule.enabled=true")
    urls = [r["annotations"]["runbook_url"] for o in by_kind(docs, "PrometheusRule")
            for g in o["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert urls and all(u.startswith(DEFAULT_RUNBOOK_BASE + "#") for u in urls)


def test_operator_objects_are_off_by_default() -> None:
    assert not [d for d in render() if d["kind"] in OPERATOR_KINDS]


def test_dashboard_configmap_for_the_grafana_sidecar() -> None:
    (cm,) = [d for d in render() if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    sources = {p.name: p.read_text() for p in (REPO / "deploy" / "grafana" / "dashboards").glob("*.json")}
    assert cm["data"] == sources


def test_self_metrics_scrapes_add_cluster_and_the_producers_node() -> None:
    docs = render(*RENDERINGS["sasl"])
    cluster = yaml.safe_load(SASL_VALUES.read_text())["clusterName"]
    for kind, key in (("PodMonitor", "relabelings"), ("VMPodScrape", "relabelConfigs")):
        (doc,) = by_kind(docs, kind)
        relabel = doc["spec"]["podMetricsEndpoints"][0][key]
        assert {"targetLabel": "cluster", "replacement": cluster} in relabel
        (node,) = [r for r in relabel if r["targetLabel"] == "node"]
        assert node["sourceLabels"][-1] == "__meta_kubernetes_pod_node_name"
        assert re.fullmatch(node["regex"], "producer;node-1") and not re.fullmatch(node["regex"], "stream;node-1")


# -- one source for the sizing figures -------------------------------------------------------------

def scaling_doc_resources() -> dict[str, dict]:
    """The "Pod resources" table of docs/scaling.md: stage -> {requests: {...}, limits: {...}}."""
    text = (REPO / "docs" / "scaling.md").read_text()
    section = text.split("## Pod resources", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    out: dict[str, dict] = {}
    for row in rows:
        cells = [c.strip().strip("`") for c in row.strip("|").split("|")]
        stage, cpu_req, mem_req, cpu_lim, mem_lim = cells[:5]
        requests = {"cpu": cpu_req, "memory": mem_req}
        limits = {k: v for k, v in (("cpu", cpu_lim), ("memory", mem_lim)) if v != "–"}
        out[stage] = {"requests": requests, "limits": limits}
    return out


def test_docs_scaling_and_chart_values_state_the_same_resources() -> None:
    documented = scaling_doc_resources()
    chart = values()
    assert documented == {
        "producer": chart["producer"]["resources"],
        "stream": chart["stream"]["resources"],
        "sink": chart["sink"]["resources"],
    }


def test_the_readme_install_command_renders() -> None:
    """The `helm install` of the README's "Run it in a cluster", with its values, renders."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Run it in a cluster", 1)[1].split("\n## ", 1)[0]
    (command,) = re.findall(r"```sh\n(helm install .*?)```", section, re.DOTALL)
    argv = [a for a in command.replace("\\\n", " ").split() if a]
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert len(sets) >= 5 and argv[3] == "deploy/helm/kube-proxy-pipeline"
    docs = render(*[x for s in sets for x in ("--set", s)])
    env = {e["name"]: e for e in container(docs, "stream")["env"]}
    assert env["KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
