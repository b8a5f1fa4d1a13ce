import pytest

from tests.backend.conftest import FLIPPED, N

SORTS = ["loss", "mean_loss", "max_loss", "visits", "score", "evicted_epoch"]
FIELD = {
    "loss": "last_loss",
    "mean_loss": "mean_loss",
    "score": "score",
    "max_loss": "max_loss",
    "visits": "visits",
    "evicted_epoch": "evicted_epoch",
}


def run_id(client):
    return client.get("/api/v1/runs").json()[0]["id"]


def walk(client, query):
    """Every page of a listing, following next_cursor."""
    items, cursor, pages = [], None, 0
    while True:
        url = f"/api/v1/runs/{run_id(client)}/samples?{query}" + (
            f"&cursor={cursor}" if cursor else ""
        )
        response = client.get(url)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return items, page["total"], pages


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("order", ["desc", "asc"])
def test_keyset_pages_cover_the_ranking_once_in_order(client, sort, order):
    items, total, pages = walk(client, f"sort={sort}&order={order}&limit=37")
    ids = [i["sample_id"] for i in items]
    assert len(ids) == len(set(ids)) == total
    keys = [(i[FIELD[sort]], i["sample_id"]) for i in items]
    assert keys == sorted(keys, reverse=order == "desc")
    if sort in ("loss", "visits"):
        assert total == N
    assert pages == -(-total // 37) or total == 0


def test_hardest_are_the_flipped_ones(client):
    page = client.get(
        f"/api/v1/runs/{run_id(client)}/samples?sort=score&limit={len(FLIPPED)}"
    ).json()
    found = {i["sample_id"] for i in page["items"]} & set(FLIPPED)
    assert len(found) >= 0.9 * len(FLIPPED)


@pytest.mark.parametrize(
    ("query", "check"),
    [
        ("evicted=true", lambda i: i["evicted_epoch"] is not None),
        ("evicted=false", lambda i: i["evicted_epoch"] is None),
        ("label=3", lambda i: i["label"] == 3),
        (
            "mispredicted=true",
            lambda i: i["last_pred"] is not None and i["last_pred"] != i["label"],
        ),
        ("pred=4", lambda i: i["last_pred"] == 4),
        ("label=5&pred=4", lambda i: i["label"] == 5 and i["last_pred"] == 4),
        ("reviewed=false", lambda i: i["verdict"] is None and not i["flagged"]),
        ("flagged=false", lambda i: not i["flagged"]),
        ("relabeled=false", lambda i: not i["relabeled"]),
    ],
)
def test_filters(client, query, check):
    items, total, _ = walk(client, f"{query}&limit=100")
    assert items
    assert total == len(items)
    assert all(check(i) for i in items)


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("sort=name", "sort"),
        ("order=sideways", "order"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("evicted=maybe", "evicted"),
        ("label=-1", "label"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=WzEsMl0", "cursor"),
    ],
)
def test_bad_listing_queries_are_422(client, query, fragment):
    response = client.get(f"/api/v1/runs/{run_id(client)}/samples?{query}")
    assert response.status_code == 422
    assert fragment in response.json()["detail"]


def test_sample_detail(client):
    rid = run_id(client)
    first, second = client.get(f"/api/v1/runs/{rid}/samples?limit=2").json()["items"]
    response = client.get(f"/api/v1/runs/{rid}/samples/{first['sample_id']}")
    assert response.status_code == 200
    detail = response.json()
    assert detail["next_id"] == second["sample_id"]
    assert detail["previous_id"] is None
    assert [t["epoch"] for t in detail["trajectory"]] == sorted(
        {v["epoch"] for v in detail["visit_losses"]}
    )
    assert sum(t["visits"] for t in detail["trajectory"]) == len(detail["visit_losses"])
    assert detail["class_names"][0] == "0 - zero"
    assert detail["label_history"] == []
    back = client.get(f"/api/v1/runs/{rid}/samples/{second['sample_id']}").json()
    assert back["previous_id"] == first["sample_id"]


def test_unknown_sample_is_a_404_naming_it(client):
    rid = run_id(client)
    response = client.get(f"/api/v1/runs/{rid}/samples/{N}")
    assert response.status_code == 404
    assert response.json()["detail"] == f"Sample {N} not found in run {rid} ({N} samples)"
    assert client.get(f"/api/v1/runs/{rid}/samples/-1").status_code == 404
    assert client.get("/api/v1/runs/999/samples/1").json() == {"detail": "Run 999 not found"}


def test_an_evicted_sample_shows_the_evidence_it_was_evicted_on(client):
    """The seeded run evicts the flipped samples on evidence (wrong at epochs 1 and 2)."""
    run = run_id(client)
    evicted = client.get(f"/api/v1/runs/{run}/samples?evicted=true&sort=score").json()["items"]
    assert {i["sample_id"] for i in evicted} == set(FLIPPED)
    detail = client.get(f"/api/v1/runs/{run}/samples/{FLIPPED[0]}").json()
    assert (detail["evicted_epoch"], detail["wrong_since"]) == (2, 1)
    assert detail["evidence_score"] > 3.0  # its losses were 3 + noise below 0.1
    assert detail["score"] == pytest.approx(detail["evidence_score"], rel=1e-6)
    clean = client.get(f"/api/v1/runs/{run}/samples/1").json()
    assert (clean["evicted_epoch"], clean["wrong_since"], clean["evidence_score"]) == (
        None,
        None,
        None,
    )
    assert clean["score"] < detail["score"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("sort=evicted_epoch&order=asc&evicted=true", "evicted_epoch"),
        ("sort=loss&order=desc&label=3", "last_loss"),
        ("sort=score&order=desc&mispredicted=true", "score"),
        ("sort=visits&order=asc&pred=2", "visits"),
    ],
)
def test_previous_and_next_walk_the_list_the_sample_was_opened_from(client, query, field):
    """A sample's neighbours are those of its list (view, filters, order), not of the run."""
    items, _, _ = walk(client, f"{query}&limit=100")
    ids = [i["sample_id"] for i in items]
    assert len(ids) >= 3, query
    rid = run_id(client)
    for at, sample_id in enumerate(ids):
        detail = client.get(f"/api/v1/runs/{rid}/samples/{sample_id}?{query}").json()
        assert detail["previous_id"] == (ids[at - 1] if at else None)
        assert detail["next_id"] == (ids[at + 1] if at + 1 < len(ids) else None)


def test_the_confusion_matrix_counts_what_each_cell_lists(client):
    rid = run_id(client)
    matrix = client.get(f"/api/v1/runs/{rid}/confusion").json()
    assert matrix["class_names"][3] == "3 - three"
    cells = {(c["label"], c["pred"]): c["count"] for c in matrix["cells"]}
    assert sum(cells.values()) == matrix["samples"] == N  # the seed reports a prediction for all
    # The seed moved each flipped label up by one and predicts the true class.
    assert sum(n for (label, pred), n in cells.items() if label != pred) == len(FLIPPED)
    assert all(label == (pred + 1) % 10 for (label, pred) in cells if label != pred)
    for (label, pred), count in cells.items():
        items, total, _ = walk(client, f"label={label}&pred={pred}&limit=1000")
        assert total == len(items) == count


def test_a_run_without_predictions_has_an_empty_confusion_matrix(tmp_path):
    import numpy as np

    from datasetq import HeapqSampler, Recorder
    from datasetq.training import MNISTSplit
    from tests.backend.conftest import make_client

    url = f"sqlite:///{tmp_path / 'losses-only.db'}"
    dataset = MNISTSplit(np.arange(40), np.arange(40) % 10)
    with Recorder(url, run="losses only", dataset=dataset) as recorder:
        sampler = HeapqSampler(dataset, recorder=recorder, seed=0)
        ids = np.array(list(sampler))
        sampler.update(ids, {"loss": np.ones(len(ids))})
    with make_client(url) as client:
        matrix = client.get("/api/v1/runs/1/confusion").json()
        assert matrix["cells"] == []
        assert matrix["samples"] == 0
        assert len(matrix["class_names"]) == 10
        assert client.get("/api/v1/runs/7/confusion").status_code == 404
