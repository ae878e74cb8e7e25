"""A customer rotates its own key: the new one is shown once and works at once, the old one keeps
working through the grace period and is refused after it; bad input gets a clear answer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.cli import main
from tests.support.proxy import FakeInference, bearer, issue_key, predict, proxy_in_front_of

KEY = re.compile(r"mf_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


def test_a_rotated_key_works_through_its_grace_period_beside_the_new_one(tmp_path: Path) -> None:
    old = issue_key(tmp_path, "cus_Alice")
    with proxy_in_front_of(FakeInference().app(), tmp_path) as client:
        rotated = client.post("/v1/keys/rotate", json={"grace_period_s": 3600}, headers=bearer(old))
        new = rotated.json()["key"]
        both = [predict(client, bearer(key)).status_code for key in (old, new)]
        usage = client.get("/v1/usage", headers=bearer(new)).json()
        at_once = client.post("/v1/keys/rotate", json={"grace_period_s": 0}, headers=bearer(new))
        newest = at_once.json()["key"]
        gone = predict(client, bearer(new))
    assert (
        rotated.status_code == 201 and rotated.headers["cache-control"] == "no-store" and KEY.fullmatch(new)
    )
    assert rotated.json()["previous_key"] == old.split("_")[1] and both == [201, 201]
    assert usage["predictions"] == 2  # one customer: the old key's predictions are the new one's too
    assert gone.status_code == 401 and "grace period is over" in gone.json()["detail"]
    assert KEY.fullmatch(newest) and newest != new


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"grace_period_s": -1}, "from 0 to 604800"),
        ({"grace_period_s": 604801}, "from 0 to 604800"),
        ({"grace_period_s": "1h"}, "whole number of seconds"),
        ({"grace": 5}, "unknown field(s) grace"),
    ],
)
def test_a_bad_rotation_gets_a_clear_error_and_changes_nothing(
    tmp_path: Path, body: object, words: str
) -> None:
    old = issue_key(tmp_path, "cus_Bob")
    with proxy_in_front_of(FakeInference().app(), tmp_path) as client:
        answer = client.post("/v1/keys/rotate", json=body, headers=bearer(old))
        anonymous = client.post("/v1/keys/rotate")
        still = predict(client, bearer(old))
    assert answer.status_code == 400 and words in answer.json()["detail"]
    assert anonymous.status_code == 401 and still.status_code == 201


def test_the_owner_rotates_a_key_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "wrangler.toml").write_text(
        '[vars]\nOWNER = "modelfolio"\nUPSTREAM_URL = "http://127.0.0.1:9"\n'
        f'PUBLIC_ORIGIN = "http://127.0.0.1:8000"\nLEDGER_PATH = "{tmp_path / "ledger.sqlite3"}"\n'
    )
    old = issue_key(tmp_path, "cus_Carol")
    key_id = old.split("_")[1]
    assert main(["keys", "rotate", key_id, "--grace-hours", "0", "--config-dir", str(folder)]) == 0
    (new,) = KEY.findall(capsys.readouterr().out)
    assert main(["keys", "rotate", "nosuchkey", "--config-dir", str(folder)]) == 1
    assert "no live key with id 'nosuchkey'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["keys", "rotate", key_id, "--grace-hours", "two", "--config-dir", str(folder)])
    with proxy_in_front_of(FakeInference().app(), tmp_path) as client:
        assert (
            predict(client, bearer(old)).status_code == 401
            and predict(client, bearer(new)).status_code == 201
        )
