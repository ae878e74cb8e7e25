"""compose.yaml: valid by the compose specification's own schema (as check-jsonschema ships it,
pinned), and true to the code: two proxies behind one port, each server reached on the port and
path it serves, told only names it reads, its secrets from .dev.vars, started in order."""

from __future__ import annotations

import re
import subprocess
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.support.deploy import (
    BIN,
    compose_schema,
    dockerfile_command,
    inference,
    proxy,
    url_target,
)
from tests.support.paths import REPO

COMPOSE_FILES = ["compose.yaml", "compose.gpu.yaml"]


def load(name: str = "compose.yaml") -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / name).read_text())
    return document


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_the_file_meets_the_compose_specification(name: str) -> None:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(load(name))
    ]
    assert not problems, "\n".join(problems)


def test_yamllint_finds_nothing_in_compose_or_ops() -> None:
    done = subprocess.run(
        [str(BIN / "yamllint"), "--strict", *COMPOSE_FILES, "ops"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_two_proxies_answer_behind_one_published_port() -> None:
    services = load()["services"]
    proxies = sorted(name for name, s in services.items() if s.get("image") == "modelfolio-proxy")
    assert proxies == ["proxy-1", "proxy-2"]
    published = [(name, port) for name, s in services.items() for port in s.get("ports", [])]
    assert [name for name, _ in published if not name.startswith(("prometheus", "grafana"))] == ["caddy"]
    caddyfile = (REPO / "ops" / "caddy" / "Caddyfile").read_text()
    port = proxy().port_of(dockerfile_command(proxy().dockerfile))
    upstreams = re.search(r"reverse_proxy ([^{]+)\{", caddyfile)
    assert upstreams is not None and upstreams.group(1).split() == [f"{p}:{port}" for p in proxies]
    assert re.search(r"health_uri (\S+)", caddyfile).group(1) in proxy().paths  # type: ignore[union-attr]
    assert all(port.startswith("127.0.0.1:") for _, port in published), "only this machine may reach them"


def test_each_server_is_told_only_what_it_reads_and_reaches_the_other_where_it_listens() -> None:
    services = load()["services"]
    for name, program in [("proxy-1", proxy()), ("proxy-2", proxy()), ("inference", inference())]:
        environment = services[name]["environment"]
        assert set(environment) <= program.env, f"{name} is given {set(environment) - program.env}"
    upstream = url_target(services["proxy-1"]["environment"]["MODELFOLIO_UPSTREAM_URL"])
    assert upstream == ("inference", inference().port_of(dockerfile_command(inference().dockerfile)), "")
    host, port, path = url_target(services["inference"]["environment"]["INFERENCE_NOTIFY_URL"])
    assert host in services and port == proxy().port_of(dockerfile_command(proxy().dockerfile))
    assert path in proxy().paths


def test_secrets_come_from_dev_vars_and_env_never_from_the_file() -> None:
    services = load()["services"]
    for name in ("proxy-1", "proxy-2", "inference"):
        assert services[name]["env_file"] == [{"path": "wrangler-like-config/.dev.vars", "required": True}]
        for variable, value in services[name]["environment"].items():
            if variable in proxy().secrets | inference().secrets:  # a URL may name a password
                password = urlsplit(str(value)).password if "://" in str(value) else str(value)
                assert password is None or password.startswith("${"), f"{name}: {variable} is inline"
    assert "${POSTGRES_PASSWORD:?" in services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    for secrets_file in ("wrangler-like-config/.dev.vars", ".env"):
        ignored = subprocess.run(["git", "check-ignore", "-q", secrets_file], cwd=REPO, check=False)
        assert ignored.returncode == 0, f"{secrets_file} must be git-ignored"


def test_every_service_is_health_checked_and_started_after_what_it_needs() -> None:
    services = load()["services"]
    needs = {
        "proxy-1": {"postgres", "redis", "inference"},
        "proxy-2": {"postgres", "redis", "inference"},
        "caddy": {"proxy-1", "proxy-2"},
    }
    for name, required in needs.items():
        depends = services[name]["depends_on"]
        assert set(depends) == required and all(d["condition"] == "service_healthy" for d in depends.values())
    for name in ["caddy", "proxy-1", "proxy-2", "inference", "postgres", "redis"]:
        assert "healthcheck" in services[name], f"{name} has no health check"
    for name, program in [("proxy-1", proxy()), ("inference", inference())]:
        test = " ".join(services[name]["healthcheck"]["test"])
        url = re.search(r"http://[^'\" ]+", test)
        assert url is not None and url_target(url.group(0))[2] in program.paths


def test_prometheus_scrapes_each_server_where_it_serves_metrics_and_grafana_is_provisioned() -> None:
    config = yaml.safe_load((REPO / "ops" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job, program in [("proxy", proxy()), ("inference", inference())]:
        assert jobs[job]["metrics_path"] in program.paths
        port = program.port_of(dockerfile_command(program.dockerfile))
        assert all(t.endswith(f":{port}") for t in jobs[job]["static_configs"][0]["targets"])
    mounts = load()["services"]["grafana"]["volumes"]
    assert "./ops/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    assert "./ops/grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts
