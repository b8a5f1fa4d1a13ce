"""Writes: relabel with history, undo, flags, bulk changes, decisions; and what is refused."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute

from tests.backend.conftest import make_client, query

BASE = "/api/v1/runs/1/samples"


def stored_label(url: str, sample_id: int) -> int:
    ((label,),) = query(url, "SELECT current_label FROM samples WHERE sample_id = :i", i=sample_id)
    return label


def test_relabel_lands_in_the_store_with_history(writer, fresh_url):
    before = writer.get(f"{BASE}/5").json()["label"]
    new = (before + 2) % 10
    response = writer.post(f"{BASE}/5/label", json={"label": new, "note": "clearly a <i>two</i>"})
    assert response.status_code == 200
    detail = response.json()
    assert detail["label"] == new
    assert detail["relabeled"] is True
    assert detail["note"] == "clearly a <i>two</i>"
    (event,) = detail["label_history"]
    assert (event["old_label"], event["new_label"], event["author"]) == (before, new, "local")
    assert stored_label(fresh_url, 5) == new
    # Undo goes back, and is itself recorded.
    undone = writer.post(f"{BASE}/5/label/undo", json={}).json()
    assert undone["label"] == before
    assert [e["new_label"] for e in undone["label_history"]] == [new, before]
    assert stored_label(fresh_url, 5) == before


def test_undo_without_history_is_a_409(writer):
    response = writer.post(f"{BASE}/6/label/undo", json={})
    assert response.status_code == 409
    assert response.json()["detail"] == "Sample 6 has no label change to undo"


def test_label_outside_the_classes_is_a_422_and_changes_nothing(writer, fresh_url):
    before = stored_label(fresh_url, 7)
    response = writer.post(f"{BASE}/7/label", json={"label": 10})
    assert response.status_code == 422
    assert "label 10 is not a class" in response.json()["detail"]
    assert writer.post(f"{BASE}/7/label", json={"label": -1}).status_code == 422
    assert writer.post(f"{BASE}/7/label", json={"label": "3"}).status_code == 422
    assert writer.post(f"{BASE}/7/label", json={"label": 3, "extra": 1}).status_code == 422
    assert stored_label(fresh_url, 7) == before


def test_flags_and_bulk_changes(writer):
    response = writer.post(f"{BASE}/8/flag", json={"flagged": True, "reason": "blurry"})
    assert response.status_code == 200
    assert response.json()["flagged"] is True
    assert response.json()["flag_history"][0]["reason"] == "blurry"
    bulk = writer.post(
        f"{BASE}/flags", json={"sample_ids": [1, 2, 2, 8], "flagged": True, "reason": "blurry"}
    )
    assert {k: v for k, v in bulk.json().items() if k != "action_id"} == {
        "changed": 2,
        "sample_ids": [1, 2],
    }
    assert isinstance(bulk.json()["action_id"], int)
    labels = writer.post(f"{BASE}/labels", json={"sample_ids": [11, 12], "label": 4})
    assert labels.status_code == 200
    page = writer.get("/api/v1/runs/1/samples?flagged=true&limit=50").json()
    assert {i["sample_id"] for i in page["items"]} == {1, 2, 8}
    relabeled = writer.get("/api/v1/runs/1/samples?relabeled=true&limit=50").json()
    assert {i["sample_id"] for i in relabeled["items"]} <= {11, 12}
    out = writer.post(f"{BASE}/labels", json={"sample_ids": [1, 300], "label": 4})
    assert out.status_code == 422
    assert "[300]" in out.json()["detail"]
    assert writer.post(f"{BASE}/labels", json={"sample_ids": [], "label": 4}).status_code == 422


def test_decisions_are_queued_for_the_job(writer, fresh_url):
    response = writer.post(f"{BASE}/9/decision", json={"action": "evict"})
    assert response.status_code == 200
    rows = query(fresh_url, "SELECT sample_id, action, run_id FROM decisions")
    assert rows == [(9, "evict", 1)]
    assert writer.post(f"{BASE}/9/decision", json={"action": "explode"}).status_code == 422


def test_writes_to_unknown_things_are_404(writer):
    assert writer.post("/api/v1/runs/99/samples/1/label", json={"label": 1}).json() == {
        "detail": "Run 99 not found"
    }
    assert writer.post(f"{BASE}/1000/flag", json={"flagged": True}).status_code == 404


def test_text_plain_is_refused_and_changes_nothing(writer, fresh_url):
    before = stored_label(fresh_url, 3)
    response = writer.post(
        f"{BASE}/3/label", content='{"label": 1}', headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.json()["detail"] == "Write requests must send application/json"
    form = writer.post(f"{BASE}/3/label", data={"label": "1"})
    assert form.status_code == 415
    assert stored_label(fresh_url, 3) == before


def test_cross_site_origin_and_foreign_host_are_refused(writer):
    response = writer.post(
        f"{BASE}/3/flag", json={"flagged": True}, headers={"origin": "https://evil.example"}
    )
    assert response.status_code == 403
    ok = writer.post(
        f"{BASE}/3/flag", json={"flagged": True}, headers={"origin": "http://127.0.0.1:8000"}
    )
    assert ok.status_code == 200
    rebinding = writer.get("/api/v1/runs", headers={"host": "attacker.example"})
    assert rebinding.status_code == 400
    assert (
        "access-control-allow-origin"
        not in writer.get("/api/v1/runs", headers={"origin": "https://evil.example"}).headers
    )


def test_large_bodies_are_refused(writer):
    response = writer.post(f"{BASE}/3/label", json={"label": 1, "note": "x" * 100_000})
    assert response.status_code == 413


WRITE = {"POST", "PUT", "PATCH", "DELETE"}


def walk_routes(routes, prefix=""):
    """Every APIRoute with its full path, following included routers."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
        elif hasattr(route, "original_router"):  # FastAPI's included router
            inner = prefix + route.include_context.prefix
            yield from walk_routes(route.original_router.routes, inner)
        elif hasattr(route, "routes"):
            yield from walk_routes(route.routes, prefix + getattr(route, "path", ""))


def write_routes(app):
    return [(path, route) for path, route in walk_routes(app.routes) if route.methods & WRITE]


def test_every_write_route_needs_the_token_when_one_is_set(fresh_url):
    with make_client(fresh_url, token="s3cret") as client:
        routes = write_routes(client.app)
        # The walk finds every write operation the API documents, so none can hide from it.
        documented = {
            (path, method.upper())
            for path, operations in client.get("/openapi.json").json()["paths"].items()
            for method in operations
            if method.upper() in WRITE
        }
        assert {(p, m) for p, r in routes for m in r.methods & WRITE} == documented
        assert len(documented) >= 6
        for template, route in routes:
            path = template.format(run_id=1, sample_id=3, action_id=1)
            for method in route.methods & WRITE:
                for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
                    response = client.request(method, path, json={}, headers=headers)
                    assert response.status_code == 401, (route.path, headers)
        ok = client.post(
            f"{BASE}/3/flag", json={"flagged": True}, headers={"authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 200
        assert ok.json()["flag_history"][-1]["author"] == "token"
        assert client.get("/api/v1/runs").status_code == 200  # reads stay open


@pytest.mark.parametrize(
    "payload",
    ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "\"'><svg/onload=alert(1)>"],
)
def test_stored_xss_comes_back_as_data(writer, payload):
    writer.post(f"{BASE}/4/flag", json={"flagged": True, "reason": payload})
    detail = writer.post(f"{BASE}/4/label", json={"label": 1, "note": payload})
    assert detail.headers["content-type"] == "application/json"
    assert detail.headers["x-content-type-options"] == "nosniff"
    body = detail.json()
    assert body["note"] == payload
    assert body["flag_reason"] == payload
