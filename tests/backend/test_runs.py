from tests.backend.conftest import FLIPPED, N


def test_list_runs(client):
    response = client.get("/api/v1/runs")
    assert response.status_code == 200
    (run,) = response.json()
    assert run["name"] == "seeded <b>run</b>"  # data, never markup: JSON carries it verbatim
    assert run["status"] == "finished"
    assert run["epochs"] == 3
    assert run["num_samples"] == N
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_run_summary_has_the_charts_data(client):
    run = client.get("/api/v1/runs").json()[0]
    response = client.get(f"/api/v1/runs/{run['id']}")
    assert response.status_code == 200
    summary = response.json()
    assert [e["epoch"] for e in summary["epochs_detail"]] == [0, 1, 2]
    assert all(len(e["loss_percentiles"]) == 5 for e in summary["epochs_detail"])
    assert sum(summary["visit_histogram"]) == N
    assert summary["evicted"] == summary["epochs_detail"][-1]["evicted_total"] > 0
    assert summary["class_names"][3] == "3 - three"
    assert "flipped" not in summary["config"]
    truth = summary["ground_truth"]
    assert truth["flipped"] == len(FLIPPED)
    assert truth["flipped_among_top"] >= 0.9 * len(FLIPPED)


def test_unknown_run_is_a_404_naming_it(client):
    response = client.get("/api/v1/runs/999")
    assert response.status_code == 404
    assert response.json() == {"detail": "Run 999 not found"}
    assert client.get("/api/v1/runs/abc").status_code == 422
