"""What the deployment files (Dockerfiles, compose.yaml, deploy/, ops/) are checked against: the
names, ports and paths each server really reads, taken from the code itself, and the offline
validators' pinned inputs."""

from __future__ import annotations

import ast
import functools
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from dockerfile_parse import DockerfileParser
from starlette.routing import Route

from tests.support.paths import REPO

K8S_VERSION = "1.35.0"  # the Kubernetes whose schemas (shipped in kubernetes-validate) deploy/ must meet
BIN = Path(sys.executable).parent  # hadolint, promtool (./dev puts it here), yamllint

FAKE_ENV = {"INFERENCE_TOKEN": "test-deploy-token", "MODELFOLIO_OWNER": "modelfolio"}


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def compose_schema() -> dict[str, Any]:
    """The compose specification's schema as check-jsonschema (pinned in pyproject.toml) ships it."""
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendored / "compose-spec.json").read_text())


# --- what each server reads -----------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    """One server as a deployment file must start and reach it."""

    name: str  # "proxy" or "inference"
    dockerfile: Path
    env: frozenset[str]  # the environment variables it reads
    secrets: frozenset[str]  # those of them that are secrets
    paths: frozenset[str]  # the HTTP paths it answers (exact routes)
    user: int  # the uid its image runs as

    def port_of(self, command: list[str]) -> int:
        """The port `command` (python -m <program> ...) makes it listen on, by its own parser."""
        assert command[:3] == ["python", "-m", self.name], command
        if self.name == "proxy":
            from proxy.cli import _parser

            return int(_parser().parse_args(command[3:]).port)
        from inference.config import settings_from

        return settings_from(command[3:], environ=FAKE_ENV).port


@functools.cache
def proxy() -> Program:
    from proxy import config

    env = {*config.REQUIRED_SECRETS, *config.OPTIONAL_SECRETS, config.ENV_PREFIX + "ENV"}
    env |= {config.ENV_PREFIX + var for var in config._VARS}
    tables = {"billing": config._BILLING, "ledger": config._LEDGER, "limits": config._LIMITS}
    env |= {
        f"{config.ENV_PREFIX}{section.upper()}_{key.upper()}"
        for section, keys in tables.items()
        for key in keys
    }
    well_known = set(config._WELL_KNOWN.values())  # DATABASE_URL, REDIS_URL: they may hold passwords
    return Program(
        name="proxy",
        dockerfile=REPO / "proxy" / "Dockerfile",
        env=frozenset(env | well_known),
        secrets=frozenset({*config.REQUIRED_SECRETS, *config.OPTIONAL_SECRETS, *well_known}),
        paths=frozenset(proxy_routes()),
        user=dockerfile_user(REPO / "proxy" / "Dockerfile"),
    )


@functools.cache
def inference() -> Program:
    return Program(
        name="inference",
        dockerfile=REPO / "inference" / "Dockerfile",
        env=frozenset(_environ_reads(REPO / "inference" / "config.py")),
        secrets=frozenset({"INFERENCE_TOKEN", "INFERENCE_WEBHOOK_SECRET"}),
        paths=frozenset(inference_routes()),
        user=dockerfile_user(REPO / "inference" / "Dockerfile"),
    )


def proxy_routes() -> set[str]:
    """Every exact route of the proxy app (the site's catch-all mount aside)."""
    from proxy import api, health, inference_events, uploads
    from proxy.billing import routes as billing_routes

    routes = [*api.ROUTES, *health.ROUTES, *uploads.ROUTES, *billing_routes(), *inference_events.ROUTES]
    return {route.path for route in routes if isinstance(route, Route)}


def inference_routes() -> set[str]:
    from inference.app import create_app
    from inference.config import Settings

    app = create_app(Settings(token=FAKE_ENV["INFERENCE_TOKEN"], owner=FAKE_ENV["MODELFOLIO_OWNER"]))
    return {route.path for route in app.routes if isinstance(route, Route)}


def inference_metrics() -> set[str]:
    """The sample names inference/metrics.py exposes (counters with _total, histograms' series)."""
    from inference.metrics import Metrics

    return _sample_names(Metrics(dict).registry)


def proxy_metrics() -> set[str]:
    from proxy.metrics import Metrics

    return _sample_names(Metrics().registry)


def _sample_names(registry: Any) -> set[str]:
    names = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("", "_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def _environ_reads(module: Path) -> set[str]:
    """The names a module reads with environ.get("X") or environ["X"]."""
    names = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "environ"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == "environ"
            and isinstance(node.slice, ast.Constant)
        ):
            names.add(str(node.slice.value))
    return names


def program_for_image(image: str) -> Program:
    """The program an image name runs: modelfolio-proxy, modelfolio-inference(-ray)."""
    name = image.rsplit("/", 1)[-1].split(":", 1)[0]
    return proxy() if name == "modelfolio-proxy" else inference()


def url_target(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    return parts.hostname, parts.port, parts.path


# --- Dockerfiles ----------------------------------------------------------------------------


def final_stage(dockerfile: Path) -> list[dict[str, Any]]:
    """The instructions of the last stage, the image that runs."""
    structure = DockerfileParser(path=str(dockerfile)).structure
    starts = [i for i, item in enumerate(structure) if item["instruction"] == "FROM"]
    return structure[starts[-1] :]


def instructions(dockerfile: Path, name: str) -> list[str]:
    return [item["value"] for item in final_stage(dockerfile) if item["instruction"] == name]


def dockerfile_user(dockerfile: Path) -> int:
    (user,) = instructions(dockerfile, "USER")
    return int(user)


def dockerfile_command(dockerfile: Path) -> list[str]:
    (cmd,) = instructions(dockerfile, "CMD")
    command: list[str] = json.loads(cmd)
    return command


def dockerfile_env(dockerfile: Path) -> set[str]:
    return set(DockerfileParser(path=str(dockerfile)).envs)


def healthcheck_url(dockerfile: Path) -> str:
    (check,) = instructions(dockerfile, "HEALTHCHECK")
    match = re.search(r"https?://[^'\" ]+", check)
    assert match is not None, check
    return match.group(0)


# --- Kubernetes ---------------------------------------------------------------------------------


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """The documents `kubectl apply -k folder` would send, for the kustomization subset deploy/
    uses (resources, namespace, images): no kustomize binary installs from the registries we
    reach, so a key outside that subset fails here rather than being rendered wrongly."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "namespace", "images"}
    assert set(kustomization) <= known, f"{folder}: only {sorted(known)} are rendered by the tests"
    documents: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        target = (folder / resource).resolve()
        assert target.exists(), f"{folder}/kustomization.yaml names {resource}, which does not exist"
        documents += kustomize(target) if target.is_dir() else yaml_documents(target)
    for document in documents:
        if "namespace" in kustomization:
            document.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
        for image in kustomization.get("images", []):
            for container in containers(document):
                if container["image"] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return documents


def pod_specs(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if document.get("kind") == "Deployment":
        yield document["spec"]["template"]["spec"]
    elif document.get("kind") == "RayService":
        cluster = document["spec"]["rayClusterConfig"]
        yield cluster["headGroupSpec"]["template"]["spec"]
        for group in cluster["workerGroupSpecs"]:
            yield group["template"]["spec"]


def containers(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for spec in pod_specs(document):
        yield from spec["containers"]


def manifests() -> list[Path]:
    """Every Kubernetes manifest under deploy/ (kustomizations and Helm values aside)."""
    return sorted(
        path
        for path in (REPO / "deploy").rglob("*.yaml")
        if path.name != "kustomization.yaml" and "monitoring" not in path.parts
    )
