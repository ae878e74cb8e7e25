"""deploy/: every manifest valid for the pinned Kubernetes (kubernetes-validate's own schemas,
strict), lint-free (yamllint), and true to the code: each container runs its image's command, on
the port that command listens on, probed on paths the server answers, told only names it reads,
its secrets referenced from a Secret and never written here. Both overlays render to the whole
product: the inference server as a Deployment, or as a KubeRay RayService."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from inference.registry import DRAIN_S
from tests.support.deploy import (
    BIN,
    FAKE_ENV,
    K8S_VERSION,
    containers,
    dockerfile_command,
    inference,
    inference_metrics,
    kustomize,
    manifests,
    pod_specs,
    program_for_image,
    proxy,
    url_target,
    yaml_documents,
)
from tests.support.paths import REPO

DEPLOY = REPO / "deploy"
OVERLAYS = {"production": DEPLOY / "overlays" / "production", "kuberay": DEPLOY / "overlays" / "kuberay"}
UVICORN_GRACE_S = 10  # inference/__main__.py: timeout_graceful_shutdown


def documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, document) for path in manifests() for document in yaml_documents(path)]


def by_kind(rendered: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in rendered if d["kind"] == kind}


def test_yamllint_finds_nothing_in_deploy() -> None:
    done = subprocess.run(
        [str(BIN / "yamllint"), "--strict", "deploy"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(d, id=f"{p.relative_to(DEPLOY)}:{d['kind']}/{d['metadata']['name']}")
        for p, d in documents()
    ],
)
def test_each_manifest_is_valid_for_the_pinned_kubernetes(document: dict[str, Any]) -> None:
    if document["kind"] == "RayService":
        # KubeRay's schema is not shipped by any registry package: its pods are checked as the
        # PodTemplates they are, and its Serve config against the code below.
        for spec in pod_specs(document):
            template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}
            kubernetes_validate.validate({**template, "template": {"spec": spec}}, K8S_VERSION, strict=True)
        return
    kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_a_manifest_that_breaks_the_schema_is_caught() -> None:
    (deployment,) = [
        d for p, d in documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == "proxy"
    ]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_the_whole_product_in_its_namespace(overlay: str) -> None:
    rendered = kustomize(OVERLAYS[overlay])
    assert {d["metadata"]["namespace"] for d in rendered} == {"modelfolio"}
    assert set(by_kind(rendered, "Service")) == {"proxy", "inference"}
    assert set(by_kind(rendered, "Ingress")) == {"modelfolio"}
    inference_kind = "Deployment" if overlay == "production" else "RayService"
    assert "inference" in by_kind(rendered, inference_kind)
    for container in (c for d in rendered for c in containers(d)):
        assert container["image"].startswith("registry.example.com/"), "the overlay sets every image"


def problems_of(document: dict[str, Any], services: dict[str, dict[str, Any]]) -> list[str]:
    """What in `document` the code does not match: a command, port, path or name it does not use."""
    from proxy.config import load_config

    problems = []
    for container in containers(document):
        program = program_for_image(container["image"])
        where = f"{document['kind']} {document['metadata']['name']}, {container['name']}"
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        if document["kind"] == "Deployment":
            if container["args"] != dockerfile_command(program.dockerfile):
                problems.append(f"{where}: runs {container['args']}, not its image's command")
            elif list(ports.values()) != [program.port_of(container["args"])]:
                problems.append(f"{where}: declares ports {ports}; the server listens on another")
            annotations = document["spec"]["template"]["metadata"]["annotations"]
            if int(annotations["prometheus.io/port"]) not in ports.values():
                problems.append(f"{where}: metrics scraped on a port it does not declare")
            if annotations["prometheus.io/path"] not in program.paths:
                problems.append(f"{where}: metrics scraped at {annotations['prometheus.io/path']}")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = container.get(probe, {}).get("httpGet")
            if get is not None and (get["path"] not in program.paths or get["port"] not in ports):
                problems.append(f"{where}: {probe} asks {get['port']}{get['path']}, which it does not serve")
        for variable in container.get("env", []):
            name = variable["name"]
            if name not in program.env and not name.startswith("RAY_"):
                problems.append(f"{where}: {name} is set, and {program.name} never reads it")
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if name in program.secrets and reference != {
                **(reference or {}),
                "name": "modelfolio-secrets",
                "key": name,
            }:
                problems.append(f"{where}: secret {name} must come from modelfolio-secrets, key {name}")
            if reference is not None and reference["key"] not in program.secrets:
                problems.append(f"{where}: reads secret key {reference['key']}, which is no secret it uses")
            if name.endswith("_URL") and "value" in variable:  # where it reaches the other server
                host, port, path = url_target(variable["value"])
                target = inference() if host == "inference" else proxy()
                if port not in [p["port"] for p in services.get(host, {}).get("spec", {}).get("ports", [])]:
                    problems.append(f"{where}: {name} names {host}:{port}, which no Service offers")
                elif path not in {"", *target.paths}:
                    problems.append(f"{where}: {name} names {path}, which {target.name} does not serve")
            if name == "MODELFOLIO_OWNER" and variable["value"] != load_config(require_secrets=False).owner:
                problems.append(f"{where}: MODELFOLIO_OWNER differs from the proxy's OWNER")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_container_matches_the_code_it_runs(overlay: str) -> None:
    """Its image's command on the port that command opens, probes and metrics on paths it serves,
    only environment names it reads, secrets by reference, URLs to a port and path served."""
    rendered = kustomize(OVERLAYS[overlay])
    services = by_kind(rendered, "Service")
    assert [p for d in rendered for p in problems_of(d, services)] == []
    assert not any(d["kind"] == "Secret" for d in rendered), "no Secret is shipped; docs/deploy.md makes it"
    for container in (c for d in rendered for c in containers(d) if "readinessProbe" in c):
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_a_manifest_naming_a_secret_port_or_path_the_code_does_not_read_is_caught() -> None:
    rendered = kustomize(OVERLAYS["production"])
    services = by_kind(rendered, "Service")
    deployment = yaml.safe_load(yaml.safe_dump(by_kind(rendered, "Deployment")["proxy"]))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["env"].append(
        {
            "name": "STRIPE_PUBLISHABLE_KEY",
            "valueFrom": {"secretKeyRef": {"name": "modelfolio-secrets", "key": "X"}},
        }
    )
    container["env"].append({"name": "INFERENCE_TOKEN", "value": "written-here"})
    container["readinessProbe"]["httpGet"]["path"] = "/ready"
    container["ports"][0]["containerPort"] = 8080
    deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] = "/stats"
    next(v for v in container["env"] if v["name"] == "MODELFOLIO_UPSTREAM_URL")["value"] = (
        "http://inference:9000"
    )
    problems = "\n".join(problems_of(deployment, services))
    for expected in [
        "STRIPE_PUBLISHABLE_KEY is set",
        "reads secret key X",
        "secret INFERENCE_TOKEN must come from modelfolio-secrets",
        "readinessProbe asks http/ready",
        "declares ports {'http': 8080}",
        "metrics scraped at /stats",
        "names inference:9000, which no Service offers",
    ]:
        assert expected in problems, f"{expected!r} not among:\n{problems}"


def test_services_and_the_ingress_reach_the_ports_the_servers_listen_on() -> None:
    rendered = kustomize(OVERLAYS["production"])
    deployments = by_kind(rendered, "Deployment")
    for name, service in by_kind(rendered, "Service").items():
        pod = deployments[name]["spec"]["template"]
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        names = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names
    (rule,) = by_kind(rendered, "Ingress")["modelfolio"]["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    proxy_service = by_kind(rendered, "Service")[backend["name"]]
    assert (
        backend["name"] == "proxy" and backend["port"]["number"] == proxy_service["spec"]["ports"][0]["port"]
    )


def test_the_inference_deployment_takes_a_gpu_drains_before_it_stops_and_scales_on_queue_depth() -> None:
    rendered = kustomize(OVERLAYS["production"])
    deployment = by_kind(rendered, "Deployment")["inference"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # New predictions stop arriving, requests in flight end, then what was accepted runs: all of
    # it before Kubernetes kills the pod.
    assert pod["terminationGracePeriodSeconds"] > pause + UVICORN_GRACE_S + DRAIN_S
    hpa = by_kind(rendered, "HorizontalPodAutoscaler")["inference"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] in inference_metrics()
    adapter = yaml.safe_load((DEPLOY / "monitoring" / "prometheus-adapter.yaml").read_text())
    assert adapter["rules"]["custom"][0]["name"]["as"] == metric["pods"]["metric"]["name"]
    assert (
        by_kind(rendered, "HorizontalPodAutoscaler")["proxy"]["spec"]["metrics"][0]["resource"]["name"]
        == "cpu"
    )
    proxy_pod = by_kind(rendered, "Deployment")["proxy"]["spec"]["template"]["spec"]
    assert "preStop" in proxy_pod["containers"][0]["lifecycle"]


def test_each_deployment_has_a_disruption_budget_and_runs_as_its_images_user() -> None:
    rendered = kustomize(OVERLAYS["production"])
    budgets = by_kind(rendered, "PodDisruptionBudget")
    for name, deployment in by_kind(rendered, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        pod = deployment["spec"]["template"]["spec"]
        program = program_for_image(pod["containers"][0]["image"])
        assert pod["securityContext"]["runAsUser"] == program.user


def test_the_rayservice_runs_the_serve_application_the_code_builds() -> None:
    (rayservice,) = by_kind(kustomize(OVERLAYS["kuberay"]), "RayService").values()
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    (application,) = config["applications"]
    module, _, attribute = application["import_path"].partition(":")
    source = ast.parse((REPO / Path(*module.split("."))).with_suffix(".py").read_text())
    builders = [f for f in source.body if isinstance(f, ast.FunctionDef) and f.name == attribute]
    assert len(builders) == 1 and len(builders[0].args.args) == 1, "Serve calls the builder with its args"
    # The args parse as the command's options, in a process of their own (Ray's imports warn).
    argv = [f"--{key}={value}" for key, value in application["args"].items()]
    parse = "import sys; from inference.ray_serve import _parse; print(_parse(sys.argv[1:])[0])"
    parsed = subprocess.run(
        [sys.executable, "-c", parse, *argv],
        cwd=REPO,
        env={**os.environ, **FAKE_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    assert parsed.returncode == 0, parsed.stderr
    assert "gpus_per_replica=1.0" in parsed.stdout and "max_replicas=4" in parsed.stdout
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'"ray[serve]=={rayservice["spec"]["rayClusterConfig"]["rayVersion"]}"' in pyproject
    worker = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    service = by_kind(kustomize(OVERLAYS["kuberay"]), "Service")["inference"]
    assert service["spec"]["ports"][0]["targetPort"] == config["http_options"]["port"]
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    assert (
        service["spec"]["selector"]["app.kubernetes.io/name"]
        == head["metadata"]["labels"]["app.kubernetes.io/name"]
    )
    assert FAKE_ENV.keys() <= {v["name"] for v in head["spec"]["containers"][0]["env"]}
