"""Server-sent events, the OpenAPI schema under schemathesis, and the serve command."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from datasetq.cli import main
from datasetq.server.app import create_app
from datasetq.server.settings import Settings


def test_events_stream_reports_the_run(client):
    with client.stream("GET", "/api/v1/runs/1/events?timeout=1") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    event = text.split("\n\n")[0]
    assert event.startswith("event: run\ndata: ")
    data = json.loads(event.split("data: ", 1)[1])
    assert data == {
        "epochs": 3,
        "status": "finished",
        "evicted": data["evicted"],
        "latest_run_id": 1,
    }
    assert data["evicted"] > 0
    assert client.get("/api/v1/runs/5/events").json() == {"detail": "Run 5 not found"}


def test_openapi_is_served(client):
    schema = client.get("/openapi.json").json()
    assert "/api/v1/runs/{run_id}/samples" in schema["paths"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        # Starlette would route this GET to /samples/{sample_id} and answer 422 for "flags".
        ("GET", "/api/v1/runs/1/samples/flags", "POST"),
        ("OPTIONS", "/api/v1/runs/1/reviews/undo", "POST"),
        ("PUT", "/api/v1/runs/1/reviews", "GET, HEAD, POST"),
        ("DELETE", "/api/v1/runs/1/samples/3", "GET, HEAD"),
    ],
)
def test_a_method_a_path_does_not_take_is_405_naming_exactly_what_it_takes(
    client, method, path, allowed
):
    # A write method without a JSON body: the 405 comes before the body checks (not 415).
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json() == {"detail": f"{method} is not allowed here"}


def test_no_server_errors_under_schemathesis(tmp_path):
    """Every operation of the OpenAPI schema, fuzzed with bounded examples: no 5xx."""
    from tests.backend.conftest import seed

    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    seed(url)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(Settings(db=url)))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    failures, calls = [], []
    for operation in operations:
        if operation.path.endswith("/events"):
            continue  # a stream that stays open; covered by its own test

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call()
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, response.status_code))

        check()
    assert failures == []
    assert len(calls) >= 10 * (len(operations) - 1)
    assert any(code < 300 for code in calls)  # not only rejections: real requests got through


def test_serve_refuses_a_public_host_without_a_token(capsys, monkeypatch):
    monkeypatch.delenv("DATASETQ_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--db", "sqlite:///unused.db"]) == 2
    assert "refusing to listen on 0.0.0.0 without a token" in capsys.readouterr().err


def test_serve_refuses_a_database_that_is_behind(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert main(["serve", "--db", url]) == 1
    assert "datasetq db upgrade --db" in capsys.readouterr().err


def test_openapi_describes_the_errors_the_server_sends(client):
    spec = client.get("/openapi.json").json()
    problem = "#/components/schemas/Problem"
    listing = spec["paths"]["/api/v1/runs/{run_id}/samples"]["get"]["responses"]
    assert listing["422"]["content"]["application/json"]["schema"]["$ref"] == problem
    assert listing["404"]["content"]["application/json"]["schema"]["$ref"] == problem
    undo = spec["paths"]["/api/v1/runs/{run_id}/reviews/{action_id}/undo"]["post"]["responses"]
    assert {"401", "403", "404", "409", "413", "415", "422", "503"} <= set(undo)
    events = spec["paths"]["/api/v1/runs/{run_id}/events"]["get"]["responses"]
    assert {"429", "503"} <= set(events)
    sent = client.get("/api/v1/runs/1/samples?limit=0")
    assert sent.status_code == 422
    assert isinstance(sent.json()["detail"], str)  # as documented, not a list


def test_timestamps_carry_their_timezone(client):
    for run in client.get("/api/v1/runs").json():
        for name in ("started_at", "heartbeat_at"):
            assert run[name].endswith(("Z", "+00:00")), (name, run[name])


def test_static_assets_are_compressed_and_the_favicon_is_served(client):
    import gzip

    import plotly

    from datasetq.bundled import dashboard_files

    original = plotly.__path__[0] + "/package_data/plotly.min.js"
    with open(original, "rb") as handle:
        script = handle.read()
    # httpx decodes gzip itself; read the raw bytes to see what travelled.
    with client.stream("GET", "/static/plotly.min.js", headers={"Accept-Encoding": "gzip"}) as r:
        assert r.status_code == 200
        assert r.headers["content-encoding"] == "gzip"
        raw = b"".join(r.iter_raw())
    assert len(raw) < len(script) / 3
    assert gzip.decompress(raw) == script
    plain = client.get("/static/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == script
    for path in ("/", "/js/main.js", "/app.css"):
        response = client.get(path, headers={"Accept-Encoding": "gzip"})
        assert response.status_code == 200
        assert response.headers.get("content-encoding") == "gzip", path
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/svg+xml"
    assert icon.content == (dashboard_files() / "favicon.svg").read_bytes()
