"""What operators watch (ops/): the alert rules pass `promtool check rules` and their own unit tests
(`promtool test rules`: each fires on the series that should fire it), and every metric that the
rules and the Grafana dashboard name is one the servers expose."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy import BIN, inference_metrics, proxy_metrics
from tests.support.paths import REPO

OPS = REPO / "ops"
PROMETHEUS = OPS / "prometheus"
DASHBOARD = OPS / "grafana" / "dashboards" / "modelfolio.json"
EXTERNAL = {"up", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"}  # Prometheus's own, NVIDIA DCGM's
_PROMQL_WORDS = {"sum", "by", "rate", "max", "avg", "histogram_quantile", "le", "without", "on", "and", "or"}


def promtool() -> str:
    found = BIN / "promtool" if (BIN / "promtool").exists() else shutil.which("promtool")
    if found is None:
        pytest.skip("no promtool: ./dev test adds it from Debian's prometheus package (apt)")
    return str(found)


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: identifiers not inside {...} or [...] or quotes,
    that are neither a function nor a keyword nor a `by (...)` label."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"|by \([^)]*\)", " ", expr)
    return {word for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", bare) if word not in _PROMQL_WORDS}


@pytest.mark.parametrize(
    "command",
    [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
        ["check", "config", "prometheus.yml"],
    ],
    ids=" ".join,
)
def test_promtool_accepts_the_rules_their_tests_and_the_config(command: list[str]) -> None:
    done = subprocess.run([promtool(), *command], cwd=PROMETHEUS, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_failures_that_cost_money_or_users_each_have_an_alert() -> None:
    exprs = {rule["alert"]: " ".join(rule["expr"].split()) for rule in rules()}
    assert "modelfolio_outbox_oldest_age_seconds) > 3600" in exprs["MeterOutboxStale"]
    assert "modelfolio_meter_dead_letters) > 0" in exprs["MeterDeadLetters"]
    assert 'status=~"5.."' in exprs["ProxyServerErrors"]
    assert 'kind="QueueFull"' in exprs["InferenceQueueSaturated"]
    assert exprs["ReplicaDown"].startswith("up{")
    for rule in rules():
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_named_is_one_the_servers_expose(source: str) -> None:
    exprs = [rule["expr"] for rule in rules()] if source == "alerts" else dashboard_exprs()
    named = set().union(*(metric_names(expr) for expr in exprs))
    unknown = named - inference_metrics() - proxy_metrics() - EXTERNAL
    assert not unknown, f"the {source} name metrics nobody exposes: {sorted(unknown)}"


def test_the_metric_check_catches_a_misspelt_name() -> None:
    named = metric_names('sum by (model) (rate(modelfolio_prediction_total{status="failed"}[5m]))')
    assert named == {"modelfolio_prediction_total"} and not named <= inference_metrics()


def test_the_dashboard_shows_what_the_issue_asks_on_the_provisioned_datasource() -> None:
    exprs = "\n".join(dashboard_exprs())
    for needed in [
        "rate(modelfolio_proxy_requests_total",  # requests/s and errors by route
        'status=~"[45].."',
        "histogram_quantile(0.5, sum by (le, route) (rate(modelfolio_proxy_request_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, route) (rate(modelfolio_proxy_request_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, model) (rate(modelfolio_prediction_latency_seconds_bucket",
        "modelfolio_batch_size_sum",
        "modelfolio_queue_depth",
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "modelfolio_outbox_backlog",
        "modelfolio_outbox_oldest_age_seconds",
        "modelfolio_cache_hits_total",
    ]:
        assert needed in exprs, f"no panel shows {needed}"
    datasource = yaml.safe_load(
        (OPS / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uids = {
        panel["datasource"]["uid"]
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        if "datasource" in panel
    }
    assert uids == {datasource["datasources"][0]["uid"]}
    provider = yaml.safe_load(
        (OPS / "grafana" / "provisioning" / "dashboards" / "modelfolio.yml").read_text()
    )
    assert Path(provider["providers"][0]["options"]["path"]) == Path("/var/lib/grafana/dashboards")
