"""Client mistakes in numbers answer 4xx with a JSON error code from a live team server, never 500.

Versions, history queries, filters, page tokens, metric steps and timestamps, alias versions and
artifact sizes: ASCII digits only (``str.isdigit()`` and ``int()`` also take '³' and '٣') and
within SQLite's signed 64-bit INTEGER, checked where the request comes in.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from modelpack import registry
from modelpack._rest import close_all
from modelpack.errors import InvalidInputError
from modelpack.store import db
from tests._team_server import team_server
from tests.registry.conftest import save_small

BIG = 2**63  # one past the largest signed 64-bit integer
TOP = 2**63 - 1


@dataclass(frozen=True)
class Live:
    api: str
    log: Path
    run_id: str
    descriptor_sha256: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One server for the module: model 'm' with version 1 (in Staging), and one run."""
    root = tmp_path_factory.mktemp("bad-input")
    home = root / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELPACK_HOME", str(root / "client-home"))
        for name in ("MODELPACK_STORE_URI", "MODELPACK_ARTIFACT_URI", "MODELPACK_TRACKING_TOKEN"):
            mp.delenv(name, raising=False)
        with team_server(home) as url:
            mp.setenv("MODELPACK_TRACKING_URI", url)
            try:
                version = registry.register("m", save_small(root / "model"))
                registry.transition("m", version.version, "Staging")
                api = f"{url}/api/v1"
                run = httpx.post(f"{api}/runs", json={"experiment": "e"})
                assert run.status_code == 201, run.text
                logs = sorted(root.glob("server-*.log"))
                assert len(logs) == 1
                yield Live(api, logs[0], run.json()["id"], version.descriptor_sha256)
            finally:
                close_all()
                db.dispose_all()


def refused(answer: httpx.Response, status: int, code: str, *names: str) -> str:
    """The error message of ``answer``, once it is checked to be the expected JSON error."""
    assert answer.status_code == status, (answer.request.url, answer.text)
    error = answer.json()["error"]
    assert error["code"] == code, error
    assert "Traceback" not in answer.text and "\n" not in error["message"]
    for name in names:
        assert name in error["message"], (name, error)
    return str(error["message"])


def still_answering(live: Live) -> None:
    assert httpx.get(f"{live.api}/models/m/versions/1").json()["version"] == 1
    assert httpx.get(f"{live.api}/whoami").status_code == 200
    assert "Traceback" not in live.log.read_text(errors="replace")


def test_versions_in_paths_and_queries(live):
    api = live.api
    refused(httpx.get(f"{api}/models/m/history?version=abc"), 400, "invalid_input", "'version'")
    for bad in ("%C2%B3", "%D9%A3", "%EF%BC%91", "+1", "%201", "1_0", "0x1", "1.0", str(BIG)):
        refused(httpx.get(f"{api}/models/m/versions/{bad}"), 400, "invalid_input", "version")
        refused(httpx.get(f"{api}/models/m/history?version={bad}"), 400, "invalid_input")
    refused(httpx.get(f"{api}/models/m/versions/{'9' * 5000}"), 400, "invalid_input", "version")
    refused(httpx.get(f"{api}/models/m/history?version={'9' * 5000}"), 400, "invalid_input")
    for method in ("PATCH", "DELETE"):
        answer = httpx.request(method, f"{api}/models/m/versions/{BIG}")
        refused(answer, 400, "invalid_input", "version")
    answer = httpx.post(f"{api}/models/m/versions/{BIG}/stage", json={"stage": "Production"})
    refused(answer, 400, "invalid_input", "version")
    answer = httpx.put(f"{api}/models/m/versions/{BIG}/tags/k", json={"value": "v"})
    refused(answer, 400, "invalid_input", "version")

    # The largest stored number is a fine question with no answer; the good ones still work.
    refused(httpx.get(f"{api}/models/m/versions/{TOP}"), 404, "model_not_found")
    assert httpx.get(f"{api}/models/m/history?version={TOP}").json() == {"transitions": []}
    assert len(httpx.get(f"{api}/models/m/history?version=1").json()["transitions"]) == 1
    assert len(httpx.get(f"{api}/models/m/history?version=").json()["transitions"]) == 1
    assert httpx.get(f"{api}/models/m/versions/latest").json()["version"] == 1
    assert httpx.get(f"{api}/models/m/versions/01").json()["version"] == 1
    still_answering(live)


def test_numbers_in_filters_and_paging(live):
    api = live.api
    for literal in ("99999999999999999999", str(BIG), str(-BIG - 1), "9" * 5000):
        for route, text in (
            ("versions", f"version = {literal}"),
            ("versions", f"created_at > {literal}"),
            ("versions", f"name = 'm' AND version IN (1, {literal})"),
            ("models", f"updated_at <= {literal}"),
        ):
            answer = httpx.get(f"{api}/{route}", params={"filter": text})
            refused(answer, 400, "invalid_input", "bad filter", literal[:40], "64-bit")
    # Other scripts' digits are not numbers of the filter syntax.
    refused(httpx.get(f"{api}/versions", params={"filter": "version = ٣"}), 400, "invalid_input")
    found = httpx.get(f"{api}/versions", params={"filter": f"version < {TOP}"}).json()
    assert [v["version"] for v in found["versions"]] == [1]
    found = httpx.get(f"{api}/versions", params={"filter": f"created_at > {-BIG}"}).json()
    assert len(found["versions"]) == 1

    for route in ("versions", "models"):
        for token in ("99999999999999999999", str(BIG), "٣", " 1", "-1", "9" * 5000):
            page_token = base64.urlsafe_b64encode(token.encode()).decode()
            answer = httpx.get(f"{api}/{route}", params={"page_token": page_token})
            refused(answer, 400, "invalid_input", "page_token")
        for bad in ("%C2%B3", str(BIG), "lots", "0"):
            answer = httpx.get(f"{api}/{route}?max_results={bad}")
            refused(answer, 400, "invalid_input", "max_results")
    refused(httpx.get(f"{api}/runs?max_results={BIG}"), 400, "invalid_input", "max_results")
    still_answering(live)


def test_metric_steps_and_timestamps(live):
    api = live.api
    run_id = live.run_id
    for step, timestamp, name in (
        (BIG, 1, "step"),
        (0, BIG, "timestamp"),
        (-BIG - 1, 1, "step"),
        (0, 2**64 - 1, "timestamp"),
        (0, 2**70, "metrics[1]"),  # past 64 bits orjson reads a float
        (True, 1, "metrics[1]"),
        (0, 1.5, "metrics[1]"),
    ):
        rows = [[run_id, "loss", 0.5, 0, 1], [run_id, "loss", 0.25, step, timestamp]]
        answer = httpx.post(f"{api}/metrics", json={"metrics": rows})
        refused(answer, 400, "invalid_input", name)
    assert httpx.get(f"{api}/runs/{run_id}/metrics/loss").json() == {"metrics": []}

    # The edges of the range are stored and read back; a value may be any int or float.
    rows = [[run_id, "loss", BIG, TOP, TOP], [run_id, "loss", -1e300, -BIG, -BIG]]
    assert httpx.post(f"{api}/metrics", json={"metrics": rows}).status_code == 204
    found = httpx.get(f"{api}/runs/{run_id}/metrics/loss").json()["metrics"]
    assert [(m["step"], m["timestamp"], m["value"]) for m in found] == [
        (-BIG, -BIG, -1e300),
        (TOP, TOP, float(BIG)),
    ]
    still_answering(live)


def test_body_numbers(live):
    api = live.api
    for bad in (BIG, -1, 2**64 - 1, True, "1"):
        answer = httpx.put(f"{api}/models/m/aliases/champion", json={"version": bad})
        refused(answer, 400, "invalid_input", "'version'")
    answer = httpx.put(f"{api}/models/m/aliases/champion", json={"version": TOP})
    refused(answer, 404, "model_not_found")

    files = {"a.bin": ["0" * 64, BIG]}
    answer = httpx.post(f"{api}/runs/{live.run_id}/artifacts", json={"files": files})
    refused(answer, 400, "invalid_input", "size")

    # A parent's version is stored: the same rules as a version in a path.
    body = {"descriptor_sha256": live.descriptor_sha256, "source": "test"}
    for parent in ("m/³", "m/٣", f"m/{BIG}", f"m/{'9' * 5000}"):
        answer = httpx.post(f"{api}/models/m/versions", json={**body, "parent": parent})
        refused(answer, 400, "invalid_input", "parent")
    with pytest.raises(InvalidInputError, match="parent"):
        registry.register("m", save_small(live.log.parent / "child"), parent=f"m/{BIG}")
    still_answering(live)


def test_an_unknown_run_is_404_even_with_nothing_to_do(live):
    api = live.api
    unknown = uuid.uuid4().hex
    bodies: list[dict[str, dict[str, str]] | None] = [None, {}, {"params": {}}]
    for body in bodies:
        answer = httpx.post(f"{api}/runs/{unknown}/params", json=body)
        refused(answer, 404, "run_not_found", unknown)
    refused(httpx.post(f"{api}/runs/{unknown}/params"), 404, "run_not_found")
    refused(httpx.post(f"{api}/runs/{unknown}/tags", json={}), 404, "run_not_found")
    refused(httpx.post(f"{api}/runs/{unknown}/tags"), 404, "run_not_found")
    # A known run with nothing to log is fine.
    answer = httpx.post(f"{api}/runs/{live.run_id}/params", json={})
    assert answer.status_code == 200 and answer.json() == {"added": {}}
    assert httpx.post(f"{api}/runs/{live.run_id}/tags").status_code == 204
    still_answering(live)


# -- a bounded fuzz (seeded: the same few hundred cases each run) ------------------------------

_PIECES = (
    *("0", "1", "7", "9", "00", "-", "+", ".", "e", "_", " ", "x", "latest", "abc", "\x00"),
    *("³", "٣", "\uff11", "½", "Ⅻ", "\u200b", "%", "'", '"', "(", ")", ",", "/", "\\", "é"),
    *(str(BIG), str(TOP), str(-BIG - 1), "9" * 25, "9" * 5000, "1e400", "NaN"),
)
_FILTERS = (
    "version = {}",
    "version IN ({}, 1)",
    "created_at >= {}",
    "updated_at != {}",
    "name = {}",
    "tags.k = {}",
    "alias = {}",
    "stage IN ({})",
    "{}",
)


def _fuzz_text(rng: random.Random) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 4)))


def _fuzz_number(rng: random.Random) -> object:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randint(-(2**70), 2**70)
    if kind == 1:
        return rng.choice([BIG, TOP, -BIG, -BIG - 1, 2**64 - 1, 0, -1])
    if kind == 2:
        return rng.uniform(-1e300, 1e300)
    if kind == 3:
        return rng.choice([True, False, None, [], {}])
    return _fuzz_text(rng)


def _fuzz_request(rng: random.Random, live: Live) -> httpx.Request:
    api, text = live.api, _fuzz_text(rng)
    segment = quote(text, safe="") or "0"
    choice = rng.randrange(9)
    if choice == 0:
        return httpx.Request("GET", f"{api}/models/m/versions/{segment}")
    if choice == 1:
        return httpx.Request("GET", f"{api}/models/m/history", params={"version": text})
    if choice == 2:
        literal = _fuzz_text(rng)
        route = rng.choice(["versions", "models"])
        params = {"filter": rng.choice(_FILTERS).format(literal)}
        return httpx.Request("GET", f"{api}/{route}", params=params)
    if choice == 3:
        key = rng.choice(["max_results", "page_token"])
        value = text if rng.random() < 0.5 else base64.urlsafe_b64encode(text.encode()).decode()
        route = rng.choice(["versions", "models", "runs"])
        return httpx.Request("GET", f"{api}/{route}", params={key: value})
    if choice == 4:
        run = rng.choice([live.run_id, segment])
        return httpx.Request("GET", f"{api}/runs/{run}/metrics/{segment}")
    if choice == 5:
        row = [live.run_id, "fuzz", _fuzz_number(rng), _fuzz_number(rng), _fuzz_number(rng)]
        return httpx.Request("POST", f"{api}/metrics", json={"metrics": [row]})
    if choice == 6:
        body = {"version": _fuzz_number(rng)}
        return httpx.Request("PUT", f"{api}/models/m/aliases/fuzz", json=body)
    if choice == 7:
        run = rng.choice([live.run_id, segment, uuid.uuid4().hex])
        return httpx.Request("POST", f"{api}/runs/{run}/params", json={"params": {}})
    # Raw, possibly invalid, percent escapes straight into the path.
    raw = "".join(rng.choice(["%C2%B3", "%FF", "%00", "%2F", "%", "1", "9" * 20]) for _ in "ab")
    return httpx.Request("GET", f"{api}/models/m/versions/{raw}")


def test_fuzzed_numbers_never_answer_5xx(live):
    rng = random.Random(20240517)
    with httpx.Client(timeout=30) as client:
        for _ in range(400):
            request = _fuzz_request(rng, live)
            answer = client.send(request)
            where = (request.method, str(request.url)[:300], answer.text[:300])
            assert answer.status_code < 500, where
            assert "Traceback" not in answer.text, where
            if answer.status_code >= 400:
                error = answer.json()["error"]
                assert isinstance(error["code"], str) and error["code"], where
                assert isinstance(error["message"], str), where
    still_answering(live)
