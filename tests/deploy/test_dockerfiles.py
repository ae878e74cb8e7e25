"""Both images, kept true to the code though neither can be built here (no container engine runs
on our machines): the command each starts parses with the server's own options, and the port it
exposes, the path its health check asks, the environment it sets and the user it runs as are
those the server and the manifests use. hadolint lints both."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.deploy import (
    BIN,
    Program,
    dockerfile_command,
    dockerfile_env,
    final_stage,
    healthcheck_url,
    inference,
    instructions,
    proxy,
    url_target,
)
from tests.support.paths import REPO

# Set for Python, pip, apt or the virtual environment, not read by our code.
_PLATFORM_ENV = {
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "DEBIAN_FRONTEND",
    "VIRTUAL_ENV",
    "PATH",
}
PROGRAMS = [proxy(), inference()]


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_the_image_starts_the_server_on_the_port_it_exposes_and_checks_a_path_it_answers(
    program: Program,
) -> None:
    command = dockerfile_command(program.dockerfile)
    port = program.port_of(command)  # the server's own parser accepts the command
    # In a container the server must listen beyond its own loopback to be reached at all.
    assert "--host" in command and command[command.index("--host") + 1] == "0.0.0.0"  # noqa: S104
    assert instructions(program.dockerfile, "EXPOSE") == [str(port)]
    host, checked_port, path = url_target(healthcheck_url(program.dockerfile))
    assert (host, checked_port) == ("127.0.0.1", port)
    assert path in program.paths, f"HEALTHCHECK asks {path}, which {program.name} does not answer"


def test_the_proxy_image_is_slim_and_checks_healthz() -> None:
    (base,) = [i["value"] for i in final_stage(proxy().dockerfile) if i["instruction"] == "FROM"]
    assert base == "${PYTHON_IMAGE}"
    assert "ARG PYTHON_IMAGE=python:3.12-slim-bookworm\n" in proxy().dockerfile.read_text()
    assert url_target(healthcheck_url(proxy().dockerfile))[2] == "/healthz"


def test_the_inference_image_is_multi_stage_on_cuda_and_ships_code_after_the_weights() -> None:
    text = (REPO / "inference" / "Dockerfile").read_text()
    assert text.count("\nFROM ") == 2 and "CUDA_IMAGE=nvidia/cuda:" in text
    copies = instructions(inference().dockerfile, "COPY")
    models = copies.index("inference/models ./inference/models")
    code = copies.index("inference/*.py ./inference/")
    assert copies.index("--from=build /opt/venv /opt/venv") < models < code, copies
    assert code == len(copies) - 1, "the code, which changes most, must be the last layer"


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_the_image_runs_as_its_own_unprivileged_user_and_sets_only_what_the_server_reads(
    program: Program,
) -> None:
    assert program.user >= 1000
    useradd = " ".join(instructions(program.dockerfile, "RUN"))
    assert f"--uid {program.user}" in useradd, "the USER must exist in the image"
    unknown = dockerfile_env(program.dockerfile) - _PLATFORM_ENV - program.env
    assert not unknown, f"{program.name}'s image sets {unknown}, which it never reads"
    secrets = dockerfile_env(program.dockerfile) & program.secrets
    assert not secrets, f"secrets are given at run time, never baked into the image: {secrets}"


def test_the_build_context_leaves_every_secrets_file_out() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "**/.dev.vars" in ignored and "**/.env" in ignored


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_hadolint_finds_nothing(program: Program) -> None:
    done = subprocess.run(
        [str(BIN / "hadolint"), str(program.dockerfile)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
