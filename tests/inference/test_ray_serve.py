"""Scale-out: the inference server as a Ray Serve deployment of two CPU replicas, over real HTTP.

Whichever replica a request reaches, a prediction created on one is read and canceled by id, and an
upload received by one is read by all: the replicas share them through one directory actor
(inference/ray_records.py). A replica killed mid-prediction has its queued predictions run by
another and its running one failed, and the proxy in front bills none that failed.

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
import sqlite3
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
from prometheus_client.parser import text_string_to_metric_families

from inference.predictions import TERMINAL
from inference.ray_records import STOPPED_WHILE_RUNNING
from proxy.app import create_app as create_proxy
from proxy.config import Secrets
from tests.support.inference import OWNER, TOKEN, auth
from tests.support.paths import DIGITS, FIXTURES, REPO
from tests.support.proxy import proxy_config
from tests.support.servers import bound_socket, serve

# The first test's time includes starting Ray and two replicas (up to 120 s on a busy machine), and
# the last one's includes stopping them (up to 60 s), on top of its own waits.
pytestmark = pytest.mark.timeout(420)

ROOT = REPO
DIGIT = DIGITS / "0000-0.png"  # held out from training; a 0
HELD = FIXTURES / "ray_models" / "held"  # runs once a file appears
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
        return self.client.post(
            CREATE, json={"input": {"image": _data_url(image)}}, headers={**auth(token), "Prefer": "wait=30"}
        )

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

    def queue_depths(self, model: str) -> dict[str, float]:
        """Each replica's queue for `model`, from its /metrics (asked until both have answered)."""
        depths: dict[str, float] = {}
        for _ in range(100):
            r = self.request("GET", "/metrics")
            assert r.status_code == 200, r.text
            depths[r.headers["x-replica"]] = sum(
                sample.value
                for family in text_string_to_metric_families(r.text)
                if family.name == "modelfolio_queue_depth"
                for sample in family.samples
                if sample.labels["model"] == model
            )
            if len(depths) == 2:
                return depths
        raise AssertionError(f"100 scrapes of /metrics reached only replica {set(depths)}")

    def _poll(self, prediction_id: str, answered_by: list[str] | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while True:
            r = self.client.get(f"/v1/predictions/{prediction_id}", headers=auth())
            assert r.status_code == 200, (
                f"replica {r.headers.get('x-replica')} answered {r.status_code}: {r.text}"
            )
            if answered_by is not None:
                answered_by.append(r.headers["x-replica"])
            if r.json()["status"] in TERMINAL:
                return r.json()
            assert time.monotonic() < deadline, f"{prediction_id} still {r.json()['status']} after 60 s"
            time.sleep(0.02)


def test_the_plain_server_never_imports_ray() -> None:
    check = "import sys, inference.__main__; assert 'ray' not in sys.modules, 'ray was imported'"
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True)


def test_a_broken_model_folder_stops_ray_serve_with_a_message_naming_it(tmp_path: Path) -> None:
    _skip_unless_possible()  # it stops before Ray starts, but if it did not, Ray must stay on lo
    shutil.copytree(HELD, tmp_path / "held", ignore=shutil.ignore_patterns("__pycache__"))
    manifest = tmp_path / "held" / "manifest.toml"
    manifest.write_text('precision = "int4"\n' + manifest.read_text())
    command = ["unshare", "-n", sys.executable, "-m", "inference.ray_serve", "--models-dir", str(tmp_path)]
    env = {**os.environ, "INFERENCE_TOKEN": TOKEN, "MODELFOLIO_OWNER": OWNER, "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert f"inference.ray_serve: {manifest}: precision 'int4' is not one of" in done.stderr
    assert "Traceback" not in done.stderr


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
        for owner, answered_by, record in deployment.pool.map(
            lambda _: deployment.create_and_poll(DIGIT), range(8)
        ):
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
    deployment: Deployment,
    tmp_path: Path,
) -> None:
    """`held` runs one prediction at a time and holds it until `release` appears, so once each
    replica runs one, every later prediction waits in its replica's queue."""
    created: dict[str, str] = {}  # tag -> prediction id

    def create(tag: str) -> httpx.Response:  # on a pool thread
        r = deployment.client.post(
            CREATE_HELD, json={"input": {"folder": str(tmp_path), "tag": tag}}, headers=auth()
        )
        assert r.status_code == 201, r.text
        created[tag] = r.json()["id"]
        return r

    def burst(name: str, n: int) -> list[tuple[str, httpx.Response]]:
        # Four at once: Serve sends each to the less busy of two replicas, so a burst reaches both
        # (one at a time, 40 creates in a row once all went to the same replica).
        tags = [f"{name}-{n}-{k}" for k in range(4)]
        return list(zip(tags, deployment.pool.map(create, tags), strict=True))

    try:
        taken: dict[str, list[str]] = {}  # replica -> tags of the predictions it took
        for n in range(10):
            for tag, reply in burst("running", n):
                taken.setdefault(reply.headers["x-replica"], []).append(tag)
            if len(taken) == 2:
                break
        assert len(taken) == 2, f"only replica {set(taken)} took predictions"
        _wait_for(
            lambda: all(any((tmp_path / f"ran-{tag}").exists() for tag in tags) for tags in taken.values()),
            "both replicas run a held prediction",
        )
        canceled: list[str] = []
        crossed = False  # a cancel reached the replica that did not hold its prediction
        for n in range(10):
            for tag, queued in burst("queued", n):
                assert queued.json()["status"] == "starting"
                answer = deployment.request("POST", f"/v1/predictions/{created[tag]}/cancel", headers=auth())
                assert answer.status_code == 200, answer.text
                assert answer.json()["status"] == "canceled", answer.json()
                canceled.append(tag)
                crossed |= answer.headers["x-replica"] != queued.headers["x-replica"]
            if crossed:
                break
        else:
            pytest.fail("40 cancels in a row reached the replica that held their prediction")
    finally:
        (tmp_path / "release").touch()
    outcomes = {tag: deployment.poll(prediction_id) for tag, prediction_id in created.items()}
    for tag, record in outcomes.items():  # all ended: a canceled one would have run by now
        assert record["status"] == ("canceled" if tag in canceled else "succeeded"), record
        assert (tmp_path / f"ran-{tag}").exists() == (tag not in canceled), f"{tag} ran or did not"
    assert outcomes[canceled[-1]]["output"] is None


def test_a_file_uploaded_through_one_replica_is_read_and_predicted_on_by_both(deployment: Deployment) -> None:
    uploaded = deployment.request(
        "POST", "/v1/files", files={"content": ("digit.png", DIGIT.read_bytes(), "image/png")}, headers=auth()
    )
    assert uploaded.status_code == 201, uploaded.text
    url = uploaded.json()["urls"]["get"]
    read_by: set[str] = set()
    predicted_by: set[str] = set()
    for _ in range(20):  # until both replicas have read the upload and predicted on it
        looked = deployment.request("GET", url.removeprefix(URL), headers=auth())
        assert looked.status_code == 200, looked.text
        assert looked.json()["checksums"] == uploaded.json()["checksums"]
        read_by.add(looked.headers["x-replica"])
        replies = deployment.pool.map(
            lambda _: deployment.client.post(
                CREATE, json={"input": {"image": url}}, headers={**auth(), "Prefer": "wait=30"}
            ),
            range(4),
        )
        for reply in replies:
            assert reply.status_code == 201 and reply.json()["output"]["label"] == "0", reply.text
            predicted_by.add(reply.headers["x-replica"])
        if len(read_by) == len(predicted_by) == 2:
            break
    assert len(read_by) == 2 and len(predicted_by) == 2, (read_by, predicted_by)
    deleted = deployment.request("DELETE", url.removeprefix(URL), headers=auth())
    assert deleted.status_code == 204
    assert deployment.request("GET", url.removeprefix(URL), headers=auth()).status_code == 404


def test_a_killed_replica_s_queued_predictions_run_on_another_and_its_running_one_fails_unbilled(
    deployment: Deployment, billing_proxy: BillingProxy, tmp_path: Path
) -> None:
    """Runs last: the deployment it leaves has a replica that Serve started in the killed one's stead.

    Eight held predictions go through the proxy, as a customer's would: each replica runs one and
    queues the rest it got. The replica with the most queued is killed (SIGKILL, as the kernel's
    OOM killer would). Its running prediction must fail, saying why, within a bound (the
    directory's ten-second lease); its queued ones must run on another replica and succeed under
    their own ids; the proxy must bill the successes once each and the failure never."""
    created: dict[str, str] = {}  # tag -> prediction id

    def create(tag: str) -> None:
        r = billing_proxy.request("POST", CREATE_HELD, json={"input": {"folder": str(tmp_path), "tag": tag}})
        assert r.status_code == 201, r.text
        created[tag] = r.json()["id"]

    def ran(tag: str) -> tuple[int, str] | None:  # (pid, replica) of the process that ran it
        path = tmp_path / f"ran-{tag}"
        text = path.read_text() if path.exists() else ""
        return (int(text.split()[0]), text.split()[1]) if len(text.split()) == 2 else None

    try:
        for n in range(8):
            create(f"held-{n}")
        depths: dict[str, float] = {}  # replica -> predictions queued there

        def settled() -> bool:  # each one runs (one per replica at most) or waits in a queue
            depths.update(deployment.queue_depths("modelfolio/held"))
            return sum(depths.values()) + sum(ran(tag) is not None for tag in created) == len(created)

        _wait_for(settled, "each held prediction runs or waits in its replica's queue")
        victim = max(depths, key=lambda replica: depths[replica])  # at least 3 of 8 queued there
        doomed = next(tag for tag in created if (ran(tag) or (0, ""))[1] == victim)
        victim_pid = ran(doomed)[0]  # type: ignore[index]
        os.kill(victim_pid, signal.SIGKILL)

        failed = billing_proxy.poll(created[doomed], deadline_s=60)
        assert (failed["status"], failed["error"]) == ("failed", STOPPED_WHILE_RUNNING), failed
        assert failed["output"] is None
    finally:
        (tmp_path / "release").touch()
    outcomes = {
        tag: billing_proxy.poll(prediction_id, deadline_s=90) for tag, prediction_id in created.items()
    }
    succeeded = {tag for tag, record in outcomes.items() if record["status"] == "succeeded"}
    assert succeeded == set(created) - {doomed}, {tag: record["error"] for tag, record in outcomes.items()}
    assert [outcomes[tag]["output"] for tag in sorted(succeeded)] == sorted(succeeded)
    for tag in succeeded:  # the killed replica's queued ones too: run once, in another process
        pid, _ = ran(tag) or (victim_pid, "")
        assert pid != victim_pid, f"{tag} ran in the killed replica, or never"
    billed = billing_proxy.billed()
    assert sorted(billed) == sorted(created[tag] for tag in succeeded), "billed other than the successes"


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
    shutil.copytree(
        ROOT / "inference" / "models" / "digits",
        models / "digits",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copytree(HELD, models / "held", ignore=shutil.ignore_patterns("__pycache__"))
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live under it
    env = {
        **os.environ,
        "INFERENCE_TOKEN": TOKEN,
        "MODELFOLIO_OWNER": OWNER,
        "RAY_TMPDIR": ray_tmp,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
    }
    command = [
        "unshare",
        "-n",
        "sh",
        "-c",
        'ip link set lo up && exec "$0" "$@"',
        sys.executable,
        "-m",
        "inference.ray_serve",
        "--replicas",
        "2",
        "--port",
        "8001",
        "--models-dir",
        str(models),
    ]
    started = time.monotonic()
    with log.open("wb") as out:
        # unshare and sh exec, so this pid is the server's own.
        server = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    namespace = None
    try:
        namespace = _namespace_of(server, log)
        with (
            ThreadPoolExecutor(16, initializer=_enter, initargs=(namespace,)) as pool,
            httpx.Client(base_url=URL, timeout=30) as client,
        ):
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


@dataclass
class BillingProxy:
    """The real proxy in front of the deployment, inside its namespace, with its own ledger."""

    client: httpx.Client
    pool: ThreadPoolExecutor
    ledger: Path

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.pool.submit(self.client.request, method, path, **kwargs).result()

    def poll(self, prediction_id: str, deadline_s: float) -> dict[str, Any]:
        """Polls as the site does until the prediction ends; the proxy bills on the way. A 5xx
        while Serve notices a dead replica is retried, as a client does."""
        deadline = time.monotonic() + deadline_s
        while True:
            r = self.request("GET", f"/v1/predictions/{prediction_id}")
            assert r.status_code == 200 or r.status_code >= 500, r.text
            if r.status_code == 200 and r.json()["status"] in TERMINAL:
                return r.json()
            assert time.monotonic() < deadline, (
                f"{prediction_id}: {r.status_code} {r.text} after {deadline_s} s"
            )
            time.sleep(0.05)

    def billed(self) -> list[str]:
        with contextlib.closing(sqlite3.connect(self.ledger)) as db:
            return [row[0] for row in db.execute("SELECT prediction_id FROM billed_usage")]


@pytest.fixture(scope="module")
def billing_proxy(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BillingProxy]:
    tmp = tmp_path_factory.mktemp("proxy")
    config = proxy_config(
        tmp, URL, demo_daily_quota=1000, secrets=Secrets(inference_token=TOKEN), ratelimits=()
    )
    server = serve(create_proxy(config), sock=deployment.pool.submit(bound_socket).result())
    # Entered on a thread in the namespace: the server's own thread, started there, stays there.
    url = deployment.pool.submit(server.__enter__).result()
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield BillingProxy(client, deployment.pool, config.ledger_path)
    finally:
        server.__exit__(None, None, None)


def _skip_unless_possible() -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray Serve is not installed: pip install -e '.[ray]'")
    if not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("no `unshare` or `ip` to make the loopback-only network namespace Ray must run in")
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(
            "cannot make a loopback-only network namespace, which Ray must run in here "
            f"(unshare -n needs root or CAP_SYS_ADMIN): {probe.stderr.strip()}"
        )


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
