"""The deployment files (Procfile, deploy/**) parse and agree with the code and each other."""

from __future__ import annotations

import configparser
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from producer import settings as smsq_settings
from producer.queues import WORKER_QUEUES
from worker.gateways import registry

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
PROCFILE = ROOT / "Procfile"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"

PROCESS_TYPES = {"web", "worker", "beat", "flower"}
CREDENTIALS = {
    "SMSQ_KECCEL_TOKEN",
    "SMSQ_SMSCLUB_TOKEN",
    "SMSQ_KINGSMS_API_KEY",
    "SMSQ_KINGSMS_CLIENT_ID",
    "SMSQ_SMS1601_USERNAME",
    "SMSQ_SMS1601_PASSWORD",
    "SMSQ_FLOWER_BASIC_AUTH",
    "SMSQ_API_KEYS",
}
SMSQ_NAME = re.compile(r"\bSMSQ_[A-Z0-9]+(?:_[A-Z0-9]+)*\b")

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yml", ".yaml"})
UNIT_FILES = sorted(SYSTEMD.glob("*.service"))


def real_settings() -> set[str]:
    names = {"SMSQ_" + field.upper() for field in smsq_settings.Settings.model_fields}
    for cls in (spec.settings for spec in registry.specs()):
        prefix = cls.model_config["env_prefix"]
        names |= {prefix + field.upper() for field in cls.model_fields}
    return names


def procfile() -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in PROCFILE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        assert sep and re.fullmatch(r"[a-z][a-z0-9_-]*", name), f"Procfile: bad line {line!r}"
        assert name not in entries, f"Procfile: {name} twice"
        entries[name] = command.strip()
    return entries


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.y*ml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def option(args: list[str], *names: str) -> str | None:
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def signature(command: str | list[str]) -> tuple[str, ...]:
    """Program and module of a process: what must agree wherever the process is defined."""
    args = argv(command)
    if len(args) > 2 and os.path.basename(args[0]).startswith("python") and args[1] == "-m":
        args = args[2:]
    program = os.path.basename(args[0])
    if program == "celery":
        app = option(args, "-A", "--app")
        rest = [a for a in args[1:] if not a.startswith("-") and a != app]
        sub = rest[0] if rest else ""
        sig: tuple[str, ...] = (program, str(app), sub)
        if sub == "worker":
            queues = option(args, "-Q", "--queues") or ""  # in order: the order is priority
            sig += (str(option(args, "-P", "--pool")), queues, str("-E" in args))
        if sub == "beat":
            sig += (str(option(args, "-S", "--scheduler")),)
        return sig
    positional = [a for a in args[1:] if not a.startswith("-")]
    return (program, positional[0] if positional else "")


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["spec"]["template"]["spec"]["containers"]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_docs() if d.get("kind") == kind]


def deployment_for(process: str) -> dict[str, Any]:
    want = signature(procfile()[process])
    found = [d for d in by_kind("Deployment") if signature(containers(d)[0]["command"]) == want]
    assert len(found) == 1, f"expected one k8s Deployment running {process}: {want}"
    return found[0]


# --- every YAML file ---------------------------------------------------------


def test_there_are_yaml_files() -> None:
    assert COMPOSE in YAML_FILES
    assert len([p for p in YAML_FILES if p.parent == K8S]) >= 9


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        pytest.fail(f"{path.relative_to(ROOT)}: {exc}")
    assert docs, f"{path.relative_to(ROOT)} is empty"
    for doc in docs:
        assert isinstance(doc, dict)


# --- Procfile ----------------------------------------------------------------


def test_procfile_process_types() -> None:
    types = set(procfile())
    assert types >= PROCESS_TYPES
    assert types - PROCESS_TYPES <= {"release"}


def test_procfile_commands() -> None:
    entries = procfile()
    assert "-A worker.celery_app worker" in entries["worker"]
    assert "-E" in argv(entries["worker"])
    assert signature(entries["worker"]) == (
        "celery",
        "worker.celery_app",
        "worker",
        "threads",
        WORKER_QUEUES,  # maintenance,send_high,callbacks,poll,send,send_bulk
        "True",
    )
    assert "-A worker.celery_app beat" in entries["beat"]
    assert option(argv(entries["beat"]), "-S", "--scheduler") == "worker.beat.SmsqScheduler"
    assert signature(entries["web"]) == ("uvicorn", "worker.web:app")
    assert "${PORT:-8000}" in entries["web"]
    assert signature(entries["flower"]) == ("smsq", "flower")
    if "release" in entries:
        assert signature(entries["release"]) == ("smsq", "migrate")


# --- docker compose ------------------------------------------------------------


def test_compose_services() -> None:
    services = compose()["services"]
    assert {"redis", "postgres", "migrate", *PROCESS_TYPES} <= set(services)
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert "healthcheck" in services["postgres"]
    assert str(services["postgres"]["image"]).startswith("postgres:16")
    assert str(services["redis"]["image"]).startswith("redis:7")


def test_compose_redis_is_durable() -> None:
    redis = compose()["services"]["redis"]
    command = " ".join(argv(redis["command"]))
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert redis.get("volumes")


def test_compose_redis_has_a_password_of_its_own() -> None:
    redis = compose()["services"]["redis"]
    command = argv(redis["command"])
    password = command[command.index("--requirepass") + 1]
    assert password.startswith("${REDIS_PASSWORD:?")  # compose refuses to start without
    assert redis["environment"]["REDISCLI_AUTH"] == password  # the health check logs in


@pytest.mark.parametrize("process", sorted(PROCESS_TYPES))
def test_compose_commands_agree_with_procfile(process: str) -> None:
    service = compose()["services"][process]
    assert signature(service["command"]) == signature(procfile()[process])


def test_compose_migrate_runs_first() -> None:
    services = compose()["services"]
    assert signature(services["migrate"]["command"]) == ("smsq", "migrate")
    assert "migrate" not in services["migrate"].get("depends_on", {})
    for process in PROCESS_TYPES:
        depends = services[process]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", process


def test_compose_environment() -> None:
    services = compose()["services"]
    for process in (*PROCESS_TYPES, "migrate"):
        env = services[process]["environment"]
        assert env["SMSQ_BROKER_URL"] == (  # the one Redis unless SMSQ_BROKER_URL says else
            "${SMSQ_BROKER_URL:-redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD}@redis:6379/0}"
        )
        assert env["SMSQ_REDIS_SENTINEL_MASTER"] == "${SMSQ_REDIS_SENTINEL_MASTER:-mymaster}"
        assert env["SMSQ_DATABASE_URL"] == "postgresql+psycopg://smsq:smsq@postgres:5432/smsq"
        for name in CREDENTIALS - {"SMSQ_FLOWER_BASIC_AUTH"}:
            assert env[name] == "${" + name + ":-}", (process, name)
    flower_auth = services["flower"]["environment"]["SMSQ_FLOWER_BASIC_AUTH"]
    assert flower_auth.startswith("${SMSQ_FLOWER_BASIC_AUTH:?")


def compose_sentinel_url() -> str:
    """The Sentinel broker URL the compose file's header tells you to export."""
    [line] = [
        line for line in COMPOSE.read_text().splitlines() if "export SMSQ_BROKER_URL=" in line
    ]
    return line.split("=", 1)[1].strip().strip('"').replace("${REDIS_PASSWORD}", "pw")


def test_compose_sentinel_profile_is_a_replica_and_three_sentinels_on_redis() -> None:
    services = compose()["services"]
    replica = services["redis-replica"]
    assert replica["profiles"] == ["sentinel"]
    command = argv(replica["command"])
    assert command[command.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
    assert command[command.index("--masterauth") + 1].startswith("${REDIS_PASSWORD:?")
    assert "--appendonly" in command and "noeviction" in command
    sentinels = [name for name in services if name.startswith("redis-sentinel-")]
    assert len(sentinels) == 3
    for name in sentinels:
        service = services[name]
        assert service["profiles"] == ["sentinel"]
        script = service["command"][0]
        assert "sentinel monitor mymaster redis 6379 2" in script  # quorum 2 of 3
        assert "sentinel auth-pass mymaster ${REDIS_PASSWORD" in script
        assert "--sentinel" in script and "port 26379" in script
    primary = argv(services["redis"]["command"])
    assert "--masterauth" in primary  # after a failover it rejoins as a replica


def test_compose_sentinel_url_names_every_sentinel_service() -> None:
    from producer import sentinel

    group = sentinel.parse(compose_sentinel_url(), "mymaster")
    assert {host for host, _port in group.nodes} == {
        name for name in compose()["services"] if name.startswith("redis-sentinel-")
    }
    assert {port for _host, port in group.nodes} == {26379}
    assert group.password == "pw"  # the master's, as the sentinels have none


def test_k8s_config_shows_the_sentinel_form() -> None:
    from producer import sentinel

    (configmap,) = by_kind("ConfigMap")
    assert configmap["data"]["SMSQ_REDIS_SENTINEL_MASTER"] == "mymaster"
    text = (K8S / "configmap.yaml").read_text()
    [line] = [ln for ln in text.splitlines() if 'SMSQ_BROKER_URL: "sentinel://' in ln]
    url = line.split(":", 1)[1].strip().strip('"')
    assert len(sentinel.parse(url, "mymaster").nodes) == 3


# --- settings named anywhere ------------------------------------------------------


def test_every_smsq_variable_is_a_real_setting() -> None:
    real = real_settings()
    unknown: dict[str, set[str]] = {}
    for path in [PROCFILE, *sorted(p for p in DEPLOY.rglob("*") if p.is_file())]:
        for name in SMSQ_NAME.findall(path.read_text()):
            if name not in real:
                unknown.setdefault(str(path.relative_to(ROOT)), set()).add(name)
    assert not unknown, f"not settings in producer.settings: {unknown}"


def test_env_example_lists_every_setting() -> None:
    text = (SYSTEMD / "smsq.env.example").read_text()
    named = set(re.findall(r"^#\s*(SMSQ_[A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert real_settings() <= named, sorted(real_settings() - named)


# --- Kubernetes ---------------------------------------------------------------------


def config_names() -> tuple[str, str]:
    (configmap,) = by_kind("ConfigMap")
    (secret,) = by_kind("Secret")
    return configmap["metadata"]["name"], secret["metadata"]["name"]


def test_k8s_resources_carry_no_namespace() -> None:
    for doc in k8s_docs():
        assert "namespace" not in doc["metadata"], doc["metadata"]["name"]


def test_k8s_workloads_load_configmap_and_secret() -> None:
    configmap, secret = config_names()
    workloads = by_kind("Deployment") + by_kind("Job")
    assert len(by_kind("Deployment")) == 4 and len(by_kind("Job")) == 1
    for doc in workloads:
        for container in containers(doc):
            env_from = container.get("envFrom", [])
            maps = {e["configMapRef"]["name"] for e in env_from if "configMapRef" in e}
            secrets = {e["secretRef"]["name"] for e in env_from if "secretRef" in e}
            assert configmap in maps, (doc["metadata"]["name"], container["name"])
            assert secret in secrets, (doc["metadata"]["name"], container["name"])


@pytest.mark.parametrize("process", sorted(PROCESS_TYPES))
def test_k8s_commands_agree_with_procfile(process: str) -> None:
    deployment_for(process)


def test_k8s_worker_shuts_down_warm() -> None:
    spec = deployment_for("worker")["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] >= 300


def test_k8s_web_probes_healthz() -> None:
    container = containers(deployment_for("web"))[0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_k8s_services_select_their_deployments() -> None:
    for service in by_kind("Service"):
        selector = service["spec"]["selector"]
        matches = [
            d
            for d in by_kind("Deployment")
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matches) == 1, service["metadata"]["name"]


def test_keda_targets_the_worker_deployment() -> None:
    (scaled,) = by_kind("ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment_for("worker")["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    assert meta["listName"] == "send"
    assert meta["listLength"] == "50"
    assert "address" in meta or "addressFromEnv" in meta


def test_pdbs_cover_worker_and_web() -> None:
    covered = set()
    for pdb in by_kind("PodDisruptionBudget"):
        assert pdb["spec"]["minAvailable"] == 1
        labels = pdb["spec"]["selector"]["matchLabels"]
        for process in ("worker", "web"):
            template = deployment_for(process)["spec"]["template"]["metadata"]["labels"]
            if labels.items() <= template.items():
                covered.add(process)
    assert covered == {"worker", "web"}


def test_migrate_job_runs_migrate() -> None:
    (job,) = by_kind("Job")
    assert signature(containers(job)[0]["command"]) == ("smsq", "migrate")


def test_secret_template_has_every_credential() -> None:
    (secret,) = by_kind("Secret")
    values = {**secret.get("stringData", {}), **secret.get("data", {})}
    assert set(values) >= CREDENTIALS, sorted(CREDENTIALS - set(values))
    for name, value in values.items():
        assert "CHANGE-ME" in value, name


# --- systemd -----------------------------------------------------------------------


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text(), source=str(path))
    return parser


def test_systemd_units_exist() -> None:
    names = {p.name for p in UNIT_FILES}
    assert {
        "smsq-web.service",
        "smsq-worker@.service",
        "smsq-beat.service",
        "smsq-flower.service",
    } <= names


@pytest.mark.parametrize("path", UNIT_FILES, ids=lambda p: p.name)
def test_systemd_unit_parses(path: Path) -> None:
    parsed = unit(path)
    assert parsed.get("Service", "ExecStart", fallback="").strip(), path.name
    assert parsed.has_section("Unit") and parsed.has_section("Install")


@pytest.mark.parametrize(
    ("name", "process"),
    [
        ("smsq-web.service", "web"),
        ("smsq-worker@.service", "worker"),
        ("smsq-beat.service", "beat"),
        ("smsq-flower.service", "flower"),
    ],
)
def test_systemd_commands_agree_with_procfile(name: str, process: str) -> None:
    service = unit(SYSTEMD / name)["Service"]
    assert signature(service["ExecStart"]) == signature(procfile()[process])
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"


def test_systemd_worker_soft_shutdown() -> None:
    service = unit(SYSTEMD / "smsq-worker@.service")["Service"]
    assert service["TimeoutStopSec"] == "300"
    # %h is a systemd specifier (home directory): Celery's host name needs %%h.
    node = option(argv(service["ExecStart"]), "-n", "--hostname") or ""
    assert "%i" in node and node.endswith("@%%h")
