"""Scale-out: the inference server as a Ray Serve deployment of two CPU replicas, over real HTTP.

Whichever replica a request reaches, a prediction created on one is read and canceled by id: the
replicas share the latest records through one directory actor (inference/ray_records.py).

Ray probes cloud metadata addresses and binds every interface when it starts, and here nothing but
loopback may ever be contacted. So the deployment runs in a new network namespace with only `lo` up
(`unshare -n`), and this test's requests are sent from threads that joined that namespace (setns):
every socket, the server's and the client's, lives inside it.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from inference.predictions import TERMINAL
from tests.inference_helpers import TOKEN, auth

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).parent.parent
DIGIT = Path(__file__).parent / "data" / "digits" / "0000-0.png"  # held out from training; a 0
HELD = Path(__file__).parent / "fixtures" / "ray_models" / "held"  # runs once a file appears
CREATE = "/v1/models/modelfolio/digits/predictions"
CREATE_HELD = "/v1/models/modelfolio/held/predictions"
URL = "http://127.0.0.1:8001"  # the namespace is new, so the port is always free
_CLONE_NEWNET = 0x40000000


@dataclass
class Deployment:
    """The running deployment, and a client whose sockets are opened inside its namespace."""

    client: httpx.Client
    pool: ThreadPoolExecutor  # every thread has joined the deployment's network namespace

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.pool.submit(self.client.request, method, path, **kwargs).result()

    def predict(self, image: Path, token: str = TOKEN) -> httpx.Response:
        return self.pool.submit(self._predict, image, token).result()

    def predict_at_once(self, image: Path, count: int) -> list[httpx.Response]:
        return list(self.pool.map(lambda _: self._predict(image, TOKEN), range(count)))

    def _predict(self, image: Path, token: str) -> httpx.Response:  # on a pool thread
        return self.client.post(CREATE, json={"input": {"image": _data_url(image)}},
                                headers={**auth(token), "Prefer": "wait=30"})

    def create_and_poll(self, image: Path) -> tuple[str, list[str], dict[str, Any]]:
        """Creates without waiting and polls by id until the prediction ends (on a pool thread):
        the replica that ran it, the replicas that answered each poll, the last record."""
        created = self.client.post(CREATE, json={"input": {"image": _data_url(image)}}, headers=auth())
        assert created.status_code == 201, created.text
        answered_by: list[str] = []
        record = self._poll(created.json()["id"], answered_by)
        return created.headers["x-replica"], answered_by, record

    def poll(self, prediction_id: str) -> dict[str, Any]:
        return self.pool.submit(self._poll, prediction_id).result()

    def _poll(self, prediction_id: str, answered_by: list[str] | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while True:
            r = self.client.get(f"/v1/predictions/{prediction_id}", headers=auth())
            assert r.status_code == 200, f"replica {r.headers.get('x-replica')} answered {r.status_code}: {r.text}"
            if answered_by is not None:
                answered_by.append(r.headers["x-replica"])
            if r.json()["status"] in TERMINAL:
                return r.json()
            assert time.monotonic() < deadline, f"{prediction_id} still {r.json()['status']} after 60 s"
            time.sleep(0.02)


def test_the_plain_server_never_imports_ray() -> None:
    check = "import sys, inference.__main__; assert 'ray' not in sys.modules, 'ray was imported'"
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True)


def test_a_held_out_digit_is_read_correctly_through_serve(deployment: Deployment) -> None:
    r = deployment.predict(DIGIT)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "succeeded"
    assert r.json()["output"]["label"] == "0"


def test_predictions_need_the_inference_token(deployment: Deployment) -> None:
    data = {"input": {"image": "data:image/png;base64,"}}
    assert deployment.request("POST", CREATE, json=data).status_code == 401
    assert deployment.predict(DIGIT, token="not-the-token").status_code == 401


def test_both_replicas_answer_predictions(deployment: Deployment) -> None:
    answered_by: set[str] = set()
    for _ in range(10):  # Serve picks the less busy of two replicas: a few rounds always suffice
        replies = deployment.predict_at_once(DIGIT, 16)
        assert [r.json()["output"]["label"] for r in replies] == ["0"] * 16
        answered_by |= {r.headers["x-replica"] for r in replies}
        if len(answered_by) == 2:
            break
    assert len(answered_by) == 2, f"only replica {answered_by} answered"


def test_a_prediction_created_without_waiting_is_found_by_id_whichever_replica_answers(
    deployment: Deployment,
) -> None:
    ran_on: set[str] = set()
    polled_elsewhere = 0  # polls answered by the replica that did not run the prediction
    for _ in range(10):  # until both replicas ran some and answered for the other's
        for owner, answered_by, record in deployment.pool.map(lambda _: deployment.create_and_poll(DIGIT),
                                                              range(8)):
            assert record["status"] == "succeeded" and record["output"]["label"] == "0", record
            assert record["urls"]["get"] == f"{URL}/v1/predictions/{record['id']}"
            ran_on.add(owner)
            polled_elsewhere += sum(replica != owner for replica in answered_by)
        if len(ran_on) == 2 and polled_elsewhere:
            break
    assert len(ran_on) == 2, f"only replica {ran_on} ran predictions"
    assert polled_elsewhere, "no poll reached the replica that did not run its prediction"


def test_the_official_replicate_client_creates_a_prediction_and_waits_for_it(deployment: Deployment) -> None:
    replicate = pytest.importorskip("replicate")
    model = deployment.request("GET", "/v1/models/modelfolio/digits", headers=auth()).json()
    version, image = model["latest_version"]["id"], _data_url(DIGIT)

    def create_and_wait(_: int) -> Any:  # on a pool thread: its sockets live in the namespace
        client = replicate.Client(api_token=TOKEN, base_url=URL)
        client.poll_interval = 0.05
        try:
            prediction = client.predictions.create(version=version, input={"image": image})
            prediction.wait()  # polls GET /v1/predictions/{id}, on either replica
            return prediction
        finally:
            client._client.close()  # the client offers no close() of its own

    predictions = list(deployment.pool.map(create_and_wait, range(8)))
    assert [p.status for p in predictions] == ["succeeded"] * 8, [p.error for p in predictions]
    assert [p.output["label"] for p in predictions] == ["0"] * 8


def test_a_prediction_queued_on_one_replica_is_canceled_through_the_other(
    deployment: Deployment, tmp_path: Path,
) -> None:
    """`held` runs one prediction at a time and holds it until `release` appears, so once each
    replica runs one, every later prediction waits in its replica's queue."""
    created: dict[str, str] = {}  # tag -> prediction id

    def create(tag: str) -> httpx.Response:
        r = deployment.request("POST", CREATE_HELD, json={"input": {"folder": str(tmp_path), "tag": tag}},
                               headers=auth())
        assert r.status_code == 201, r.text
        created[tag] = r.json()["id"]
        return r

    try:
        running: dict[str, str] = {}  # replica -> tag of the prediction it runs
        for n in range(40):
            running.setdefault(create(f"running-{n}").headers["x-replica"], f"running-{n}")
            if len(running) == 2:
                break
        assert len(running) == 2, f"only replica {set(running)} took predictions"
        _wait_for(lambda: all((tmp_path / f"ran-{tag}").exists() for tag in running.values()),
                  "both replicas run a held prediction")
        canceled: list[str] = []
        for n in range(40):  # a cancel reaches either replica: until one reaches the other
            queued = create(f"queued-{n}")
            assert queued.json()["status"] == "starting"
            answer = deployment.request("POST", f"/v1/predictions/{queued.json()['id']}/cancel", headers=auth())
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "canceled", answer.json()
            canceled.append(f"queued-{n}")
            if answer.headers["x-replica"] != queued.headers["x-replica"]:
                break
        else:
            pytest.fail("40 cancels in a row reached the replica that owned their prediction")
    finally:
        (tmp_path / "release").touch()
    outcomes = {tag: deployment.poll(prediction_id) for tag, prediction_id in created.items()}
    for tag, record in outcomes.items():  # all ended: a canceled one would have run by now
        assert record["status"] == ("canceled" if tag in canceled else "succeeded"), record
        assert (tmp_path / f"ran-{tag}").exists() == (tag not in canceled), f"{tag} ran or did not"
    assert outcomes[canceled[-1]]["output"] is None


def _data_url(image: Path) -> str:
    return f"data:image/png;base64,{base64.b64encode(image.read_bytes()).decode()}"


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)


# --- the deployment, in its own loopback-only network namespace -------------------------------------


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    _skip_unless_possible()
    log = tmp_path_factory.mktemp("ray_serve") / "server.log"
    models = tmp_path_factory.mktemp("models")  # the digits model and a held fixture, nothing else
    shutil.copytree(ROOT / "inference" / "models" / "digits", models / "digits",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(HELD, models / "held", ignore=shutil.ignore_patterns("__pycache__"))
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live under it
    env = {**os.environ, "INFERENCE_TOKEN": TOKEN, "RAY_TMPDIR": ray_tmp,
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"',
               sys.executable, "-m", "inference.ray_serve", "--replicas", "2", "--port", "8001",
               "--models-dir", str(models)]
    started = time.monotonic()
    with log.open("wb") as out:
        # unshare and sh exec, so this pid is the server's own.
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    namespace = None
    try:
        namespace = _namespace_of(server, log)
        with ThreadPoolExecutor(16, initializer=_enter, initargs=(namespace,)) as pool, \
                httpx.Client(base_url=URL, timeout=30) as client:
            deployment = Deployment(client, pool)
            _wait_ready(deployment, server, log)
            print(f"two replicas answered {time.monotonic() - started:.1f} s after start")
            yield deployment
        _stop(server, log)
    finally:
        if namespace is not None:
            _kill_all_in(namespace)  # only after a failure: Ctrl-C has ended them all otherwise
            os.close(namespace)
        if server.poll() is None:
            server.kill()
        server.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _skip_unless_possible() -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray Serve is not installed: pip install -e '.[ray]'")
    if not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("no `unshare` or `ip` to make the loopback-only network namespace Ray must run in")
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        pytest.skip("cannot make a loopback-only network namespace, which Ray must run in here "
                    f"(unshare -n needs root or CAP_SYS_ADMIN): {probe.stderr.strip()}")


def _namespace_of(server: subprocess.Popen[bytes], log: Path) -> int:
    """An fd of the server's network namespace, once `unshare` has made it (not ours any more)."""
    ours = os.readlink("/proc/self/ns/net")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and server.poll() is None:
        path = f"/proc/{server.pid}/ns/net"
        fd = os.open(path, os.O_RDONLY)
        if os.readlink(path) != ours:
            return fd
        os.close(fd)
        time.sleep(0.01)
    raise RuntimeError(f"the server never entered its own network namespace:\n{_tail(log)}")


def _enter(namespace: int) -> None:
    # A thread may join another network namespace on its own; sockets it opens stay in it.
    if ctypes.CDLL(None, use_errno=True).setns(namespace, _CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns into the server's network namespace failed")


def _wait_ready(deployment: Deployment, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    status: object = "no answer"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the deployment exited with {server.returncode}:\n{_tail(log)}")
        try:
            status = deployment.request("GET", "/readyz").status_code
        except httpx.TransportError as exc:
            status = repr(exc)
        if status == 200:
            return
        time.sleep(0.2)
    raise RuntimeError(f"not ready after 120 s (last: {status}):\n{_tail(log)}")


def _stop(server: subprocess.Popen[bytes], log: Path) -> None:
    """Ctrl-C, as a person would: Serve and Ray must shut down cleanly, and soon."""
    server.send_signal(signal.SIGINT)
    try:
        code = server.wait(60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running 60 s after Ctrl-C:\n{_tail(log)}") from None
    assert code == 0, f"exit status {code} after Ctrl-C:\n{_tail(log)}"


def _kill_all_in(namespace: int) -> None:
    """SIGKILL to every process in the deployment's namespace: all were started by this test (some
    of Ray's leave the server's session, so a process group would not reach them)."""
    ns = os.fstat(namespace)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            other = os.stat(f"/proc/{pid}/ns/net")
            if (other.st_dev, other.st_ino) == (ns.st_dev, ns.st_ino):
                os.kill(int(pid), signal.SIGKILL)


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

