"""Security and privacy: offline by default, the baseline's privacy guard, no secret in the tracking
store or the logs, and only safe file formats (docs/security.md).

A socket guard (`SocketGuard`) patches socket connect and name resolution in this process: any
attempt to reach an address that is not loopback (or an AF_UNIX socket) is recorded and refused,
and a host-name lookup other than localhost is recorded and fails. The tests then run a real
fine-tune and real baselines under it.
"""

from __future__ import annotations

import ast
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid
from pathlib import Path

import mlflow
import pytest
from chat_server import reply

from pipelines.baselines import BaselineConfig, run_baseline
from pipelines.baselines.privacy import RemoteEndpointRefused
from pipelines.data.errors import DataError
from pipelines.offline import OFFLINE_ENV

ROOT = Path(__file__).resolve().parents[1]
SMALL_DATA = "synthetic?reports=12&series=20"
UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")

# ---------------------------------------------------------------- the socket guard


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


class SocketGuard:
    """Records and refuses every connection to a non-loopback address and every host-name lookup
    (except localhost); `redirect` maps an address to a local port to connect to instead (the
    attempt is still recorded), so a test can see what would have been sent."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, str, object]] = []
        self.redirect: dict[str, int] = {}

    def install(self, mp: pytest.MonkeyPatch) -> SocketGuard:
        real_connect, real_connect_ex, real_getaddrinfo = (
            socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo)
        guard = self

        def target(sock: socket.socket, address):
            if sock.family == getattr(socket, "AF_UNIX", None) or not isinstance(address, tuple):
                return address
            host, port = address[0], address[1]
            if _is_loopback(host):
                return address
            guard.attempts.append(("connect", host, port))
            if host in guard.redirect:
                return ("127.0.0.1", guard.redirect[host])
            raise ConnectionRefusedError(f"socket guard: connection to {host}:{port} refused")

        def connect(sock, address):
            return real_connect(sock, target(sock, address))

        def connect_ex(sock, address):
            return real_connect_ex(sock, target(sock, address))

        def getaddrinfo(host, *args, **kwargs):
            name = host.decode() if isinstance(host, bytes) else host
            if name in (None, "") or _is_loopback(name):
                return real_getaddrinfo(host, *args, **kwargs)
            try:
                ipaddress.ip_address(name.split("%", 1)[0])  # a literal address needs no lookup
                return real_getaddrinfo(host, *args, **kwargs)
            except ValueError:
                guard.attempts.append(("resolve", name, args[0] if args else None))
                raise socket.gaierror(socket.EAI_NONAME, f"socket guard: lookup of {name} refused") from None

        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        return self


@pytest.fixture
def guard(monkeypatch) -> SocketGuard:
    return SocketGuard().install(monkeypatch)


def test_the_guard_records_and_refuses_external_connections_and_lookups(guard) -> None:
    with pytest.raises(OSError):
        socket.create_connection(("93.184.216.34", 80), timeout=1)
    with pytest.raises(OSError):
        socket.create_connection(("example.org", 443), timeout=1)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    socket.create_connection(server.getsockname(), timeout=1).close()  # loopback stays allowed
    server.close()
    assert guard.attempts == [("connect", "93.184.216.34", 80), ("resolve", "example.org", 443)]


# ---------------------------------------------------------------- offline by default


def test_cli_setup_makes_hugging_face_and_mlflow_offline(monkeypatch) -> None:
    from pipelines.cli import setup_logging

    for name in OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # a deliberate opt-in is kept
    setup_logging()
    assert {name: os.environ[name] for name in OFFLINE_ENV} == {**OFFLINE_ENV, "HF_HUB_OFFLINE": "0"}
    assert {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "MLFLOW_DISABLE_TELEMETRY"} <= set(
        OFFLINE_ENV)


TELEMETRY_PROBE = textwrap.dedent("""
    import json, os, socket, sys, tempfile, time
    attempts = []
    real_gai, real_connect = socket.getaddrinfo, socket.socket.connect
    def getaddrinfo(host, *a, **k):
        if host not in (None, "", "localhost", "127.0.0.1", "::1"):
            attempts.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "refused")
        return real_gai(host, *a, **k)
    def connect(sock, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1"):
            attempts.append(str(address[0]))
            raise ConnectionRefusedError("refused")
        return real_connect(sock, address)
    socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect
    import mlflow          # first, as a script that imports mlflow before the lab's code would
    import pipelines       # the lab's import-time defaults (pipelines.offline)
    mlflow.set_tracking_uri(f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
    mlflow.set_experiment("offline")
    def tracked_run():
        with mlflow.start_run():
            mlflow.log_param("p", 1)
        time.sleep(3)      # MLflow's telemetry runs in background threads
        return list(attempts)
    default = tracked_run()
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "false"   # the control: telemetry on, on purpose
    print(json.dumps({"default": default, "enabled": tracked_run()}))
""")


def test_mlflow_telemetry_stays_off_unless_enabled_on_purpose(tmp_path) -> None:
    """A fresh interpreter, without pytest's or a CI's variables (MLflow turns telemetry off under
    those): a tracked run makes no lookup; the control, MLFLOW_DISABLE_TELEMETRY=false, tries
    config.mlflow-telemetry.io -- so the guard sees telemetry, and the lab's default is what stops it."""
    ci_markers = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "CIRCLECI", "GITLAB_CI", "JENKINS_URL",
                  "TRAVIS", "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE",
                  "TEAMCITY_VERSION", "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME",
                  "RUNBOT_WORKER_ID", "DO_NOT_TRACK", *OFFLINE_ENV)
    env = {k: v for k, v in os.environ.items() if k not in ci_markers}
    env.update({"PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    done = subprocess.run([sys.executable, "-c", TELEMETRY_PROBE], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    attempts = json.loads(done.stdout.strip().splitlines()[-1])
    assert attempts["default"] == []
    assert any("mlflow-telemetry" in a for a in attempts["enabled"]), attempts


@pytest.fixture(scope="module")
def guarded_finetune(tiny_model_dir, tmp_path_factory, migrated_db):
    """A default-style fine-tune of the tiny model (local SQLite store) with the socket guard on."""
    from pipelines.config import FinetuneConfig
    from pipelines.train.recipe import train

    root = tmp_path_factory.mktemp("offline-finetune")
    shutil.copy(migrated_db, root / "mlflow.db")
    guard = SocketGuard()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        config = FinetuneConfig(model=str(tiny_model_dir), tasks="harmonization", data=SMALL_DATA, epochs=1,
                                checkpoint_epochs=(1,), train_limit=4, eval_limit=2, batch_size=2,
                                max_new_tokens=8, device="cpu", output_dir=str(root / "outputs"))
        with pytest.MonkeyPatch.context() as guarded:  # the guard only while the fine-tune runs
            guard.install(guarded)
            result = train(config)
            time.sleep(1)  # anything a library started in the background has had its chance
        yield result, root, guard


def test_a_fine_tune_makes_no_external_connection(guarded_finetune) -> None:
    result, _, guard = guarded_finetune
    assert mlflow.MlflowClient().get_run(result.run_id).info.status == "FINISHED"
    assert guard.attempts == []
    assert all(os.environ.get(name) for name in OFFLINE_ENV)  # importing `pipelines` set them


# ---------------------------------------------------------------- the baseline's privacy guard

PUBLIC_TEST_ADDRESS = "203.0.113.7"  # TEST-NET-3: public by the privacy guard's rules, never routed


@pytest.mark.parametrize("allow_remote", [False, True])
def test_a_remote_endpoint_gets_nothing_without_allow_remote(allow_remote, guard, chat_server, store) -> None:
    """The endpoint's address is public, so the privacy guard needs --allow-remote; the socket guard
    sends what would go there to a local recording server instead. Without the flag: refused before
    any connection, nothing received. With it (the control): the report text arrives."""
    server = chat_server(lambda n, body, headers: reply("T1"))
    guard.redirect[PUBLIC_TEST_ADDRESS] = server.port
    config = BaselineConfig(backend="openai", base_url=f"http://{PUBLIC_TEST_ADDRESS}:{server.port}/v1",
                            model="remote-llm", tasks="harmonization", data=SMALL_DATA, eval_limit=2,
                            allow_remote=allow_remote, cache="", concurrency=1)
    if not allow_remote:
        with pytest.raises(RemoteEndpointRefused, match="Nothing was sent"):
            run_baseline(config)
        assert guard.attempts == [] and server.requests == []
        assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []
    else:
        result = run_baseline(config)
        assert result.counts["ok"] == 2 and len(server.requests) == 2
        assert set(guard.attempts) == {("connect", PUBLIC_TEST_ADDRESS, server.port)}
        assert mlflow.get_run(result.run_id).data.params["allow_remote"] == "True"


def test_a_remote_host_name_is_refused_without_a_connection(guard, store) -> None:
    """A host name is resolved to decide whether it is local (a DNS lookup, no connection, no text);
    unresolvable or public, it is refused."""
    config = BaselineConfig(backend="openai", base_url="https://api.openai.com/v1", model="gpt-4o",
                            data=SMALL_DATA, eval_limit=2, cache="")
    with pytest.raises(RemoteEndpointRefused, match="api.openai.com.*Nothing was sent"):
        run_baseline(config)
    assert [a for a in guard.attempts if a[0] == "connect"] == []
    assert {a[1] for a in guard.attempts} <= {"api.openai.com"}


# ---------------------------------------------------------------- secrets


def scan_for(secrets: list[str], root: Path, texts: list[str]) -> list[str]:
    """Where any of `secrets` appears: files under `root` (bytes), every run's params, tags and
    metric names, and the given texts (captured output and logs)."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path}: {s[:6]}..." for s in secrets if s.encode() in data]
    client = mlflow.MlflowClient()
    for run in mlflow.search_runs(search_all_experiments=True, output_format="list"):
        run = client.get_run(run.info.run_id)
        blob = json.dumps([run.data.params, run.data.tags, sorted(run.data.metrics), run.info.artifact_uri])
        found += [f"run {run.info.run_id}: {s[:6]}..." for s in secrets if s in blob]
    found += [f"captured text {i}" for i, text in enumerate(texts) for s in secrets if s in text]
    return found


def baseline_argv(port: int, *extra: str, userinfo: str = "") -> list[str]:
    return ["--backend", "openai", "--base-url", f"http://{userinfo}127.0.0.1:{port}/v1",
            "--api-key-env", "LAB_TEST_API_KEY", "--model", "local-llm", "--tasks", "harmonization",
            "--data", SMALL_DATA, "--eval-limit", "3", "--concurrency", "1", "--cache", "cache.sqlite", *extra]


def test_no_api_key_or_url_password_in_the_store_the_logs_or_the_output(chat_server, store, monkeypatch,
                                                                         capsys, caplog) -> None:
    """Two baselines: one with an API key (read with a trailing newline, as $(cat key.txt) gives it),
    whose server answers once with a 400 echoing the Authorization header (the text lands in the
    prediction records); one with a password in the base URL. Neither secret may appear anywhere
    afterwards: files under the store's folder (SQLite, artifacts, response cache), any run's params,
    tags and metric names, stdout, stderr and the log records."""
    from pipelines import baseline

    key, password = f"sk-test-{uuid.uuid4().hex}", f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("LAB_TEST_API_KEY", key + "\n")

    def script(n, body, headers):
        if n == 2:
            return 400, {}, json.dumps({"error": f"bad request from {headers.get('Authorization')}"})
        return reply(json.dumps({body["messages"][-1]["content"].split("\n\n", 1)[1]: "T1"}))

    server = chat_server(script)
    caplog.set_level("DEBUG")
    assert baseline.main(baseline_argv(server.port)) == 0
    assert server.requests and all(h.get("Authorization") == f"Bearer {key}" for h, _ in server.requests)
    [run] = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.data.params["api_key_env"] == "LAB_TEST_API_KEY"
    records = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="predictions",
                                                       dst_path=str(Path.cwd() / "downloaded")))
    errors = [json.loads(line).get("response_error", "") for line in (records / "harmonization.jsonl").open()]
    assert any("Bearer ***" in e for e in errors)  # the echoed header, redacted
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(Path.cwd())

    monkeypatch.delenv("LAB_TEST_API_KEY")
    sent = len(server.requests)
    assert baseline.main(baseline_argv(server.port, "--cache", "", userinfo=f"lab:{password}@")) == 0
    assert len(server.requests) > sent
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list", order_by=["start_time DESC"])
    assert runs[0].data.params["base_url"] == f"http://lab:***@127.0.0.1:{server.port}/v1"

    out, err = capsys.readouterr()
    assert scan_for([key, password], Path.cwd(), [out, err, caplog.text]) == []


def test_a_rejected_key_is_not_repeated_in_the_error(chat_server, store, monkeypatch, capsys, caplog) -> None:
    """The server answers 401 and quotes the key back (as OpenAI's does, in part): the run stops with
    exit 2, and neither the message nor the store holds the key."""
    from pipelines import baseline

    key = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("LAB_TEST_API_KEY", key)
    server = chat_server(lambda n, body, headers: (401, {}, json.dumps(
        {"error": {"message": f"Incorrect API key provided: {headers.get('Authorization', '')[7:]}"}})))
    caplog.set_level("DEBUG")
    assert baseline.main(baseline_argv(server.port)) == 2
    out, err = capsys.readouterr()
    assert "401" in err and "API key" in err and "***" in err
    assert server.requests and server.requests[0][0]["Authorization"] == f"Bearer {key}"
    assert scan_for([key], Path.cwd(), [out, err, caplog.text]) == []


# ---------------------------------------------------------------- safe formats


def test_adapters_are_saved_as_safetensors_and_nothing_is_pickled(guarded_finetune) -> None:
    result, root, _ = guarded_finetune
    adapters = [p for p in root.rglob("adapter_config.json")]
    assert adapters, "no adapter folder written"
    for config in adapters:
        assert (config.parent / "adapter_model.safetensors").is_file(), config.parent
    unsafe = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in UNSAFE_SUFFIXES]
    assert unsafe == []


UNSAFE_LOADERS = {
    "pickle.load", "pickle.loads", "cPickle.load", "cPickle.loads", "_pickle.load", "_pickle.loads",
    "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads", "joblib.load", "marshal.load",
    "marshal.loads", "shelve.open", "pandas.read_pickle", "yaml.unsafe_load", "yaml.unsafe_load_all",
    "yaml.full_load", "yaml.full_load_all",
}
SAFE_YAML_LOADERS = ("SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader")


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ""
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def unsafe_calls(source: str, filename: str = "<source>") -> list[str]:
    """Calls that can run code hidden in a file: pickle-family loads, yaml.load without a safe
    loader, torch.load without weights_only=True, numpy.load(allow_pickle=True), and any
    trust_remote_code=True."""
    tree = ast.parse(source, filename)
    aliases = {"np": "numpy", "pd": "pandas"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update({a.asname or a.name: a.name for a in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module:
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        where = f"{filename}:{node.lineno}"

        def is_true(value: ast.AST | None) -> bool:
            return isinstance(value, ast.Constant) and value.value is True

        if is_true(keywords.get("trust_remote_code")):
            found.append(f"{where}: trust_remote_code=True")
        if name in UNSAFE_LOADERS:
            found.append(f"{where}: {name}")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = keywords.get("Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or not _dotted(loader, aliases).endswith(SAFE_YAML_LOADERS):
                found.append(f"{where}: {name} without a safe Loader")
        elif name == "torch.load" and not is_true(keywords.get("weights_only")):
            found.append(f"{where}: torch.load without weights_only=True")
        elif name == "numpy.load" and is_true(keywords.get("allow_pickle")):
            found.append(f"{where}: numpy.load(allow_pickle=True)")
    return found


def test_the_unsafe_call_check_finds_what_it_should() -> None:
    bad = textwrap.dedent("""
        import pickle, yaml, torch, joblib
        import numpy as np
        from pickle import loads as unpickle
        from transformers import AutoModel
        pickle.load(open("x", "rb")); unpickle(b""); joblib.load("m")
        yaml.load(text); yaml.load(text, Loader=yaml.Loader); yaml.unsafe_load(text); yaml.full_load(text)
        torch.load("w.pt"); torch.load("w.pt", weights_only=False); np.load("a.npy", allow_pickle=True)
        AutoModel.from_pretrained("x", trust_remote_code=True)
    """)
    assert [hit.split(": ", 1)[1] for hit in unsafe_calls(bad)] == [
        "pickle.load", "pickle.loads", "joblib.load", "yaml.load without a safe Loader",
        "yaml.load without a safe Loader", "yaml.unsafe_load", "yaml.full_load",
        "torch.load without weights_only=True", "torch.load without weights_only=True",
        "numpy.load(allow_pickle=True)", "trust_remote_code=True",
    ]
    safe = textwrap.dedent("""
        import yaml, torch
        import numpy as np
        yaml.safe_load(text); yaml.load(text, Loader=yaml.SafeLoader); yaml.load(text, yaml.CSafeLoader)
        torch.load("w.pt", weights_only=True); np.load("a.npy"); json.loads("{}")
        AutoModel.from_pretrained("x", trust_remote_code=False)
    """)
    assert unsafe_calls(safe) == []


def test_no_code_runs_from_a_loaded_file() -> None:
    """pipelines/, analysis/ and dashboards/ load YAML safely and never unpickle or trust remote code."""
    files = [p for folder in ("pipelines", "analysis", "dashboards") for p in (ROOT / folder).rglob("*.py")]
    assert len(files) > 50
    found = [hit for path in files for hit in unsafe_calls(path.read_text(encoding="utf-8"),
                                                           str(path.relative_to(ROOT)))]
    assert found == []


# ---------------------------------------------------------------- hostile input files


def _report(findings: str, doctype: str = "") -> str:
    return (f'<?xml version="1.0"?>{doctype}<eCitation><IUXRId id="1"/>'
            f'<AbstractText Label="FINDINGS">{findings}</AbstractText>'
            f'<AbstractText Label="IMPRESSION">Normal.</AbstractText><MeSH><major>normal</major></MeSH></eCitation>')


def test_xml_entity_expansion_and_external_entities_are_refused(tmp_path) -> None:
    """A billion-laughs bomb and an external entity that would read a local file: both are errors
    naming the file (expat refuses the expansion; ElementTree never fetches external entities)."""
    from pipelines.data.openi_xml import load_openi_xml
    from pipelines.data.sources import SourceSpec

    secret = tmp_path / "secret.txt"
    secret.write_text("PATIENT-NAME-XYZ")
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 12))
    hostile = {
        "bomb": _report("&l11;", f'<!DOCTYPE eCitation [<!ENTITY l0 "lol">{laughs}]>'),
        "external": _report("&x;", f'<!DOCTYPE eCitation [<!ENTITY x SYSTEM "file://{secret}">]>'),
    }
    for name, xml in hostile.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "1.xml").write_text(xml)
        start = time.perf_counter()
        with pytest.raises(DataError, match=r"1\.xml, line 1: not well-formed XML"):
            load_openi_xml(SourceSpec("openi-xml", str(folder)))
        assert time.perf_counter() - start < 5


def test_archives_are_read_in_memory_never_unpacked(tmp_path) -> None:
    """A member named ../../escaped.xml is read from the archive like any other; nothing is written."""
    from pipelines.data.openi_xml import load_openi_xml
    from pipelines.data.sources import SourceSpec

    (tmp_path / "r.xml").write_text(_report("Clear lungs."))
    archive = tmp_path / "work" / "reports.tgz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as out:
        out.add(tmp_path / "r.xml", arcname="../../escaped.xml")
    before = sorted(p for p in tmp_path.parent.rglob("*") if p.is_file())
    bundle = load_openi_xml(SourceSpec("openi-xml", str(archive)))
    assert [r.id for r in bundle.reports] == ["1"]
    assert sorted(p for p in tmp_path.parent.rglob("*") if p.is_file()) == before


def test_security_doc_lists_every_offline_variable() -> None:
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in text for name in OFFLINE_ENV)
