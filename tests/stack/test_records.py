"""A prediction outlives the model server that ran it: the proxy answers from its last record once
the model server has forgotten it (here: restarted), and one that never finished there ends as
failed, saying why, so that a client's wait() ends."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import replicate

from inference.app import create_app as create_inference
from proxy.app import create_app as create_proxy
from proxy.records import LOST
from tests.support.gates import GATE
from tests.support.inference import OWNER, png_data_url, settings_for, wait_ready
from tests.support.paths import FIXTURES
from tests.support.proxy import issue_key, proxy_config
from tests.support.servers import bound_socket, serve, url_of


def _same_port(port: int) -> socket.socket:
    again = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    again.bind(("127.0.0.1", port))
    return again


def test_predictions_outlive_a_model_server_restart(tmp_path: Path) -> None:
    settings = settings_for(FIXTURES / "models")
    first = bound_socket()
    port = first.getsockname()[1]
    key = issue_key(tmp_path, "cus_records")
    with contextlib.ExitStack() as running:
        model_server = contextlib.ExitStack()
        model_server.enter_context(serve(create_inference(settings), sock=first))
        wait_ready(url_of(first))
        proxy = running.enter_context(serve(create_proxy(proxy_config(tmp_path, url_of(first)))))
        client = replicate.Client(api_token=key, base_url=proxy)
        running.callback(client._client.close)
        done = client.models.predictions.create(
            model=f"{OWNER}/shapes", input={"image": png_data_url((30, 20))}, wait=True
        )
        GATE.clear()  # the next one is still running when its server goes away
        try:
            held = client.models.predictions.create(model=f"{OWNER}/shapes", input={"image": png_data_url()})
        finally:
            GATE.set()
        assert (done.status, held.status) == ("succeeded", "starting")
        model_server.close()  # forgets every prediction it had

        running.enter_context(serve(create_inference(settings), sock=_same_port(port)))
        wait_ready(f"http://127.0.0.1:{port}")
        again = client.predictions.get(done.id)
        assert (again.status, again.output) == ("succeeded", {"width": 30.0, "height": 20.0, "mode": "RGB"})
        assert again.urls == {
            "get": f"{proxy}/v1/predictions/{done.id}",
            "cancel": f"{proxy}/v1/predictions/{done.id}/cancel",
        }
        held.wait()  # ends: the proxy knows the prediction was lost
        assert (held.status, held.error) == ("failed", LOST)
        listed = {p.id: p.status for p in client.predictions.list()}
        assert listed == {held.id: "failed", done.id: "succeeded"}
        assert client.predictions.cancel(done.id).status == "succeeded"
