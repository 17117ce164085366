"""A team tracking server with authentication: a real `mlflow server --app-name basic-auth` on loopback.

The commands and settings are those of docs/team_server.md. Its default permission is
NO_PERMISSIONS: a user sees only the experiments they created or were granted, because a run's
predictions hold report text (patient data when the study uses a hospital's reports). Alice
creates an experiment and logs to it; Bob can neither write nor read it until Alice grants him
READ, after which he reads it and runs the analysis, logged to an experiment of his own.
"""

from __future__ import annotations

import importlib.util
import json
import secrets

import mlflow
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client
from mlflow_fixtures import log_demo_study
from mlflow_server import mlflow_server

from analysis import analyze

# The basic-auth app refuses passwords under 12 characters.
ADMIN_BOOTSTRAP = ("admin", "bootstrap-only-password")
ADMIN = ("admin", "rotated-admin-password")
ALICE = ("alice", "alice-password-2026")
BOB = ("bob", "bob-password-2026")
EXPERIMENT = "chest-xray"


def auth_config(folder) -> str:
    """The auth ini of docs/team_server.md: users in their own database, no access by default."""
    path = folder / "basic_auth.ini"
    path.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN_BOOTSTRAP[0]}\n"
        f"admin_password = {ADMIN_BOOTSTRAP[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Without it every request re-checks the password hash (scrypt, ~0.15 s of server CPU).
        "auth_cache_ttl_seconds = 60\n"
    )
    path.chmod(0o600)
    return str(path)


def login(monkeypatch, user: tuple[str, str]) -> None:
    """What a team member exports before logging: MlflowClient reads them on every request."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])


def error_code(call) -> str:
    with pytest.raises(MlflowException) as raised:
        call()
    return raised.value.error_code


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if importlib.util.find_spec("flask_wtf") is None:
        pytest.fail("the basic-auth app needs Flask-WTF: pip install 'mlflow[auth]>=3.17,<3.18'")
    folder = tmp_path_factory.mktemp("auth-server")
    env = {"MLFLOW_AUTH_CONFIG_PATH": auth_config(folder), "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)}
    with mlflow_server(folder, app_name="basic-auth", env=env) as url:
        yield {"url": url, "folder": folder}


@pytest.fixture(scope="module")
def team(server):
    """The admin rotates the bootstrap password and creates Alice and Bob; Alice logs a study."""
    url = server["url"]
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        login(mp, ADMIN_BOOTSTRAP)
        admin = get_app_client("basic-auth", tracking_uri=url)
        admin.update_user_password(ADMIN[0], ADMIN[1], current_password=ADMIN_BOOTSTRAP[1])
        login(mp, ADMIN)
        users = {name: admin.create_user(name, password) for name, password in (ALICE, BOB)}
        login(mp, ALICE)
        mlflow.set_tracking_uri(url)
        try:
            experiment_id = mlflow.create_experiment(EXPERIMENT)
            runs = log_demo_study(experiment_id, study="team")
        finally:
            mlflow.set_tracking_uri(previous)
    return {**server, "users": users, "experiment_id": experiment_id, "runs": runs,
            "run_id": runs["reference"][2]}


def test_health_is_open_and_everything_else_needs_a_login(server, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    url = server["url"]
    assert requests.get(f"{url}/health", timeout=10).status_code == 200  # for load balancers
    search = f"{url}/api/2.0/mlflow/experiments/search"
    anonymous = requests.get(search, params={"max_results": 10}, timeout=10)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
    wrong = requests.get(search, params={"max_results": 10}, auth=(ALICE[0], "not-her-password"), timeout=10)
    assert wrong.status_code == 401
    assert error_code(lambda: mlflow.MlflowClient(url).search_experiments()) == "UNAUTHENTICATED"


def test_admin_created_two_plain_users_and_the_bootstrap_password_is_dead(team, monkeypatch):
    assert {name: user.is_admin for name, user in team["users"].items()} == {"alice": False, "bob": False}
    login(monkeypatch, ADMIN_BOOTSTRAP)
    assert error_code(lambda: mlflow.MlflowClient(team["url"]).search_experiments()) == "UNAUTHENTICATED"
    login(monkeypatch, BOB)  # a plain user cannot make users
    assert error_code(lambda: get_app_client("basic-auth", tracking_uri=team["url"]).create_user(
        "mallory", "mallory-password-1")) == "PERMISSION_DENIED"


def test_alice_logs_runs_and_artifacts_to_her_experiment(team, monkeypatch):
    login(monkeypatch, ALICE)
    client = mlflow.MlflowClient(team["url"])
    run = client.get_run(team["run_id"])
    assert run.info.experiment_id == team["experiment_id"] and run.data.params["epoch"] == "2"
    assert run.data.metrics["labeling/f1_macro"] == pytest.approx(0.8)
    assert len(client.search_runs([team["experiment_id"]], "tags.role = 'checkpoint'")) == 6
    local = client.download_artifacts(team["run_id"], "predictions/labeling.jsonl", str(team["folder"] / "a"))
    assert len(open(local).read().splitlines()) == 20


def test_bob_cannot_write_to_alices_experiment(team, monkeypatch):
    login(monkeypatch, BOB)
    client, run_id = mlflow.MlflowClient(team["url"]), team["run_id"]
    assert error_code(lambda: client.create_run(team["experiment_id"])) == "PERMISSION_DENIED"
    assert error_code(lambda: client.log_metric(run_id, "labeling/f1_macro", 1.0, step=2)) == "PERMISSION_DENIED"
    assert error_code(lambda: client.set_tag(run_id, "role", "tampered")) == "PERMISSION_DENIED"
    raw = requests.post(f"{team['url']}/api/2.0/mlflow/runs/log-metric", auth=BOB, timeout=10,
                        json={"run_id": run_id, "key": "labeling/f1_macro", "value": 1.0, "timestamp": 0, "step": 2})
    assert raw.status_code == 403
    login(monkeypatch, ALICE)
    history = mlflow.MlflowClient(team["url"]).get_metric_history(run_id, "labeling/f1_macro")
    assert [(m.step, m.value) for m in history] == [(2, pytest.approx(0.8))]


def test_bob_cannot_read_alices_experiment_without_a_grant(team, monkeypatch):
    login(monkeypatch, BOB)
    client, run_id = mlflow.MlflowClient(team["url"]), team["run_id"]
    assert error_code(lambda: client.get_experiment(team["experiment_id"])) == "PERMISSION_DENIED"
    assert error_code(lambda: client.get_run(run_id)) == "PERMISSION_DENIED"
    assert EXPERIMENT not in {e.name for e in client.search_experiments()}  # filtered, not refused
    assert client.search_runs([team["experiment_id"]]) == []
    artifact = f"{team['experiment_id']}/{run_id}/artifacts/predictions/labeling.jsonl"
    raw = requests.get(f"{team['url']}/api/2.0/mlflow-artifacts/artifacts/{artifact}", auth=BOB, timeout=10)
    assert raw.status_code == 403


def test_a_read_grant_lets_bob_analyze_but_still_not_write(team, monkeypatch):
    login(monkeypatch, ALICE)  # the experiment's creator manages it: no admin needed to share it
    get_app_client("basic-auth", tracking_uri=team["url"]).grant_user_permission(
        BOB[0], "experiment", team["experiment_id"], "READ")
    login(monkeypatch, BOB)
    client = mlflow.MlflowClient(team["url"])
    assert client.get_run(team["run_id"]).data.params["model"] == "smollm2-135m"
    assert error_code(lambda: client.log_metric(team["run_id"], "x", 1.0)) == "PERMISSION_DENIED"
    out = team["folder"] / "bob-analysis"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(team["url"])
    try:
        code = analyze.main(["--experiment", EXPERIMENT, "--study", "team", "--param", "epoch=2",
                             "--log-experiment", "bob-analyses", "--output", str(out),
                             "--cache-dir", str(team["folder"] / "bob-cache")])
    finally:
        mlflow.set_tracking_uri(previous)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference_run_id"] == team["run_id"] and len(summary["run_ids"]) == 3
    logged = client.search_runs([client.get_experiment_by_name("bob-analyses").experiment_id])
    assert [r.data.tags["role"] for r in logged] == ["analysis"]
    login(monkeypatch, ALICE)  # Bob's own experiment is his alone
    assert error_code(lambda: mlflow.MlflowClient(team["url"]).get_run(logged[0].info.run_id)) == "PERMISSION_DENIED"
