"""The review log: decisions as actions, undo as a history, decisions that reach a live job."""

from __future__ import annotations

from tests.backend.conftest import FLIPPED, N, query

BASE = "/api/v1/runs/1"


def act(writer, kind, ids, **extra):
    response = writer.post(f"{BASE}/reviews", json={"kind": kind, "sample_ids": ids, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def sample(writer, sample_id):
    return writer.get(f"{BASE}/samples/{sample_id}").json()


def test_undo_steps_back_through_a_reviewers_actions_in_reverse_order(writer):
    original = sample(writer, 21)["label"]
    relabel = act(writer, "relabel", [21], label=(original + 1) % 10)
    drop = act(writer, "drop", [22])
    flag = act(writer, "flag", [23], reason="blurry")
    assert (sample(writer, 22)["verdict"], sample(writer, 23)["flagged"]) == ("drop", True)

    undone = [writer.post(f"{BASE}/reviews/undo", json={}).json() for _ in range(3)]
    assert [u["undo"]["undoes"] for u in undone] == [flag["id"], drop["id"], relabel["id"]]
    assert sample(writer, 21)["label"] == original
    assert sample(writer, 21)["relabeled"] is False
    assert sample(writer, 22)["verdict"] is None
    assert sample(writer, 23)["flagged"] is False

    fourth = writer.post(f"{BASE}/reviews/undo", json={})
    assert fourth.status_code == 200
    assert fourth.json() == {"undo": None, "message": "Nothing left to undo for local"}

    history = sample(writer, 21)["review_history"]
    assert [(h["kind"], h["undone_by"] is not None) for h in history] == [
        ("relabel", True),
        ("undo", False),
    ]
    log = writer.get(f"{BASE}/reviews").json()
    assert [a["kind"] for a in log[:6]] == ["undo", "undo", "undo", "flag", "drop", "relabel"]


def test_undo_is_per_reviewer_and_undoes_the_latest_decision_only(writer):
    act(writer, "drop", [30], reviewer="ana")
    act(writer, "keep", [30], reviewer="ben")  # the latest decision wins
    assert sample(writer, 30)["verdict"] == "keep"
    ana = writer.post(f"{BASE}/reviews/undo", json={"reviewer": "ana"}).json()
    assert ana["undo"]["author"] == "ana"
    assert sample(writer, 30)["verdict"] == "keep"  # ben's keep still stands
    writer.post(f"{BASE}/reviews/undo", json={"reviewer": "ben"})
    assert sample(writer, 30)["verdict"] is None


def test_a_bulk_action_is_undone_in_one_step(writer, fresh_url):
    ids = list(range(40, 60))
    action = act(writer, "relabel", ids, label=7, reason="all sevens")
    assert (action["samples"], action["sample_ids"]) == (20, ids)
    assert query(
        fresh_url,
        "SELECT count(*) FROM samples WHERE current_label = 7 AND sample_id >= 40 "
        "AND sample_id < 60",
    ) == [(20,)]
    undo = writer.post(f"{BASE}/reviews/undo", json={}).json()["undo"]
    assert (undo["undoes"], undo["samples"]) == (action["id"], 20)
    relabeled = query(
        fresh_url,
        "SELECT count(*) FROM samples WHERE current_label != original_label",
    )
    assert relabeled == [(0,)]


def test_a_named_action_can_be_undone_once(writer):
    first = act(writer, "keep", [FLIPPED[0]])
    act(writer, "flag", [FLIPPED[1]])
    response = writer.post(f"{BASE}/reviews/{first['id']}/undo", json={})
    assert response.status_code == 200
    assert response.json()["undoes"] == first["id"]
    again = writer.post(f"{BASE}/reviews/{first['id']}/undo", json={})
    assert again.status_code == 409
    assert "undone already" in again.json()["detail"]
    undo_of_undo = writer.post(f"{BASE}/reviews/{response.json()['id']}/undo", json={})
    assert undo_of_undo.status_code == 409
    missing = writer.post(f"{BASE}/reviews/99999/undo", json={})
    assert missing.status_code == 404
    assert missing.json() == {"detail": "there is no review action 99999 in this dataset"}


def test_decisions_reach_a_live_job(writer, fresh_url):
    """A drop evicts, a keep reinstates, a relabel both relabels and reinstates; undoing a
    drop reinstates again (the recorder polls these tables between epochs)."""
    act(writer, "drop", [11])
    act(writer, "keep", [FLIPPED[2]])
    act(writer, "relabel", [12], label=0)
    writer.post(f"{BASE}/reviews/undo", json={})  # the relabel
    writer.post(f"{BASE}/reviews/undo", json={})  # the keep: the sampler's eviction is not redone
    writer.post(f"{BASE}/reviews/undo", json={})  # the drop
    decisions = query(fresh_url, "SELECT sample_id, action FROM decisions ORDER BY id")
    assert decisions == [
        (11, "evict"),
        (FLIPPED[2], "reinstate"),
        (12, "reinstate"),
        (11, "reinstate"),
    ]
    labels = query(fresh_url, "SELECT sample_id, new_label FROM label_changes ORDER BY id")
    original = sample(writer, 12)["original_label"]
    assert labels == [(12, 0), (12, original)]


def test_bad_review_requests_are_422_and_change_nothing(writer, fresh_url):
    for body in (
        {"kind": "relabel", "sample_ids": [1]},
        {"kind": "keep", "sample_ids": [1], "label": 3},
        {"kind": "explode", "sample_ids": [1]},
        {"kind": "keep", "sample_ids": []},
        {"kind": "keep", "sample_ids": [1, 300]},
        {"kind": "relabel", "sample_ids": [1], "label": 10},
    ):
        response = writer.post(f"{BASE}/reviews", json=body)
        assert response.status_code == 422, body
        assert isinstance(response.json()["detail"], str)
    assert query(fresh_url, "SELECT count(*) FROM review_actions") == [(0,)]
    assert (
        writer.post("/api/v1/runs/9/reviews", json={"kind": "keep", "sample_ids": [1]}).status_code
        == 404
    )


def test_decisions_belong_to_the_dataset_and_show_in_every_run_over_it(writer, fresh_url):
    """A second run over the same dataset sees (and exports) the first run's decisions."""
    import numpy as np

    from datasetq import HeapqSampler, Recorder
    from datasetq.datasets import EmbeddedMNIST
    from datasetq.training import MNISTSplit

    act(writer, "drop", [5])
    labels = EmbeddedMNIST().targets.numpy()[:300].astype(np.int64)
    labels[FLIPPED] = (labels[FLIPPED] + 1) % 10
    dataset = MNISTSplit(np.arange(300), labels)
    with Recorder(fresh_url, run="second", dataset=dataset) as recorder:
        sampler = HeapqSampler(dataset, recorder=recorder, seed=1)
        ids = list(sampler)
        sampler.update(ids, {"loss": np.ones(len(ids))})
    runs = {r["name"]: r["id"] for r in writer.get("/api/v1/runs").json()}
    second = runs["second"]
    assert writer.get(f"/api/v1/runs/{second}/samples/5").json()["verdict"] == "drop"
    counts = writer.get(f"/api/v1/runs/{second}/export/counts").json()
    assert counts["dropped_by_reviewer"] == 1


def test_reviewed_lists_the_samples_with_a_standing_decision(writer):
    def reviewed():
        page = writer.get("/api/v1/runs/1/samples?reviewed=true&limit=1000").json()
        assert page["total"] == len(page["items"])
        return {i["sample_id"] for i in page["items"]}

    assert reviewed() == set()
    act(writer, "keep", [1, 2])
    flag = act(writer, "flag", [3])
    act(writer, "relabel", [4], label=0)
    assert reviewed() == {1, 2, 3, 4}
    undecided = writer.get("/api/v1/runs/1/samples?reviewed=false&limit=1000").json()
    assert undecided["total"] == N - 4
    writer.post(f"/api/v1/runs/1/reviews/{flag['id']}/undo", json={})
    assert reviewed() == {1, 2, 4}
