"""Baselines: prompt templates, the privacy guard, the OpenAI-compatible client against a local
chat-completions server (429 then success, malformed replies), the response cache, and a local
chat model on the tiny test model."""
from __future__ import annotations

import json

import mlflow
import pytest
from chat_server import reply

from pipelines.baselines import BaselineConfig, run_baseline
from pipelines.baselines.backends import (
    BackendFatalError,
    ChatRequest,
    OpenAIChatBackend,
    render_chat,
    retry_after_seconds,
)
from pipelines.baselines.config import PROMPTING_MODES
from pipelines.baselines.privacy import RemoteEndpointRefused, check_endpoint, inspect_endpoint
from pipelines.baselines.prompts import load_template
from pipelines.tasks import get_task, task_names
from pipelines.vocabulary import LABEL_KEYS, SERIES_CLASSES

SMALL_DATA = "synthetic?reports=12&series=20"


def user_text(body: dict) -> str:
    return body["messages"][-1]["content"]


# ---------------------------------------------------------------- prompt templates


@pytest.mark.parametrize("mode", PROMPTING_MODES)
@pytest.mark.parametrize("task", task_names())
def test_every_task_has_a_template_in_every_mode(mode, task):
    template = load_template(mode, task)
    rendered = template.render("THE-INPUT")
    assert "THE-INPUT" in rendered and "{{" not in rendered
    assert get_task(task).directive in rendered  # consistent with the fine-tuning directive
    if mode == "zero-shot":
        assert rendered == f"{get_task(task).directive}\n\nTHE-INPUT"


def test_prompt_engineered_templates_list_every_label_and_class():
    labeling = load_template("prompt-engineered", "labeling").text
    assert all(f'"{key}"' in labeling and f"- {key}:" in labeling for key in LABEL_KEYS)
    harmonization = load_template("prompt-engineered", "harmonization").text
    assert all(f"- {cls}:" in harmonization for cls in SERIES_CLASSES)
    assert '"IMPRESSION:"' in load_template("prompt-engineered", "impression").text


def test_template_errors_say_what_to_fix(tmp_path):
    (tmp_path / "zero-shot").mkdir()
    (tmp_path / "zero-shot" / "labeling.txt").write_text("no placeholder")
    with pytest.raises(ValueError, match="lacks the"):
        load_template("zero-shot", "labeling", tmp_path)
    with pytest.raises(ValueError, match="create"):
        load_template("zero-shot", "impression", tmp_path)
    with pytest.raises(ValueError, match="valid modes"):
        load_template("few-shot", "impression", tmp_path)


def test_render_chat_uses_the_template_or_falls_back_to_plain_text(tiny_model_dir):
    from transformers import AutoTokenizer

    messages = ({"role": "user", "content": "Harmonize sequence name.\n\nAX T2"},)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.chat_template
    templated = render_chat(tokenizer, messages)
    assert "<|im_start|>user" in templated and templated.endswith("<|im_start|>assistant\n")
    tokenizer.chat_template = None
    assert render_chat(tokenizer, messages) == "Harmonize sequence name.\n\nAX T2\n\n"


# ---------------------------------------------------------------- privacy guard


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/v1", "http://localhost:8000/v1", "http://10.1.2.3/v1", "http://172.20.0.5/v1",
    "http://192.168.1.9:8080/v1", "http://[::1]:8000/v1", "http://[fd12::1]/v1", "http://gpu-box.local/v1",
])
def test_local_and_private_endpoints_pass(url):
    assert check_endpoint(url, allow_remote=False, resolver=lambda host: []).local


@pytest.mark.parametrize("url", ["https://api.openai.com/v1", "http://8.8.8.8/v1", "http://172.32.0.1/v1",
                                 "http://[2001:db8::1]/v1"])
def test_remote_endpoints_are_refused_without_allow_remote(url):
    with pytest.raises(RemoteEndpointRefused, match="Nothing was sent.*--allow-remote"):
        check_endpoint(url, allow_remote=False)
    assert not check_endpoint(url, allow_remote=True).local


def test_host_names_are_resolved_and_must_be_private_throughout():
    assert inspect_endpoint("http://vllm.hospital.internal/v1", lambda h: ["10.0.0.7"]).local
    assert not inspect_endpoint("http://mixed.example/v1", lambda h: ["10.0.0.7", "93.184.216.34"]).local
    assert not inspect_endpoint("http://unresolvable.example/v1", lambda h: []).local
    with pytest.raises(ValueError, match="http"):
        inspect_endpoint("api.openai.com", lambda h: [])


def test_baseline_refuses_a_remote_endpoint_before_sending_anything(tracking_store, tmp_path, monkeypatch):
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("a request was sent")

    monkeypatch.setattr(requests.Session, "post", no_network)
    monkeypatch.setattr(requests, "post", no_network)
    config = BaselineConfig(backend="openai", base_url="https://api.openai.com/v1", model="gpt-4o",
                            data=SMALL_DATA, eval_limit=2)
    with pytest.raises(RemoteEndpointRefused, match="api.openai.com"):
        run_baseline(config)
    assert not (tmp_path / "mlflow.db").exists()  # refused before the tracking store was even opened


def test_cli_allow_remote_is_a_flag_and_a_value():
    from pipelines.baseline import parse_args

    base = ["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"]
    assert parse_args(base).allow_remote is False
    assert parse_args([*base, "--allow-remote"]).allow_remote is True
    assert parse_args([*base, "--allow-remote", "false"]).allow_remote is False
    with pytest.raises(ValueError, match="base-url"):
        BaselineConfig(backend="openai", base_url="")


# ---------------------------------------------------------------- the OpenAI-compatible client


def test_client_retries_a_429_honoring_retry_after_and_reads_malformed_replies_as_empty(chat_server):
    def script(n, body, headers):
        if n == 1:
            return 429, {"Retry-After": "0"}, '{"error": "rate limited"}'
        text = user_text(body)
        if text == "broken":
            return 200, {}, "{not json"
        if text == "null":
            return reply(None)
        return reply(f"echo {text}")

    server = chat_server(script)
    client = OpenAIChatBackend(server.url, "test-model", "sk-test", concurrency=1, backoff_s=5.0)
    requests_ = [ChatRequest(({"role": "user", "content": t},), 8) for t in ("a", "broken", "b", "null")]
    results = client.complete(requests_)
    assert [r.status for r in results] == ["ok", "malformed", "ok", "malformed"]
    assert [r.text for r in results] == ["echo a", "", "echo b", ""]
    assert results[0].attempts == 2 and results[0].prompt_tokens == 7
    assert client.stats.retries == 1 and client.stats.requests == 5
    assert server.bodies[0] == {"model": "test-model", "messages": [{"role": "user", "content": "a"}],
                                "temperature": 0.0, "max_tokens": 8}


def test_client_gives_up_after_max_retries_and_stops_on_a_rejected_key(chat_server):
    server = chat_server(lambda n, body, headers: (503, {}, "overloaded") if user_text(body) == "busy"
                         else (401, {}, '{"error": "bad key"}'))
    client = OpenAIChatBackend(server.url, "m", max_retries=2, backoff_s=0.001)
    [result] = client.complete([ChatRequest(({"role": "user", "content": "busy"},), 4)])
    assert result.status == "failed" and "HTTP 503 after 3 attempts" in result.error
    with pytest.raises(BackendFatalError, match="401.*API key"):
        client.complete([ChatRequest(({"role": "user", "content": "x"},), 4)])


def test_client_retries_a_timeout(chat_server):
    import time

    def script(n, body, headers):
        if n == 1:
            time.sleep(0.6)  # longer than the client's timeout
        return reply("late but fine")

    server = chat_server(script)
    client = OpenAIChatBackend(server.url, "m", timeout_s=0.2, backoff_s=0.001)
    [result] = client.complete([ChatRequest(({"role": "user", "content": "x"},), 4)])
    assert (result.status, result.text, result.attempts) == ("ok", "late but fine", 2)


def test_retry_after_accepts_seconds_and_http_dates():
    assert retry_after_seconds("2.5") == 2.5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_openai_baseline_scores_logs_and_caches(store, chat_server, tmp_path):
    def script(n, body, headers):
        if n == 1:
            return 429, {"Retry-After": "0"}, "slow down"
        if n == 3:
            return 200, {}, '{"choices": []}'
        description = user_text(body).split("\n\n", 1)[1]
        return reply(json.dumps({description: "T1"}))

    server = chat_server(script)
    config = BaselineConfig(backend="openai", base_url=server.url, model="local-llm", tasks="harmonization",
                            data=SMALL_DATA, eval_limit=3, concurrency=1, study="s1",
                            cache=str(tmp_path / "cache.sqlite"))
    first = run_baseline(config)
    assert len(server.bodies) == 4
    assert first.counts == {"ok": 2, "cached": 0, "malformed": 1, "failed": 0, "requests_sent": 4,
                                 "retries": 1}

    run = mlflow.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["role"] == "baseline" and run.data.tags["study"] == "s1"
    params = run.data.params
    assert params["model"] == "local-llm" and params["prompting"] == "zero-shot"
    assert params["backend"] == "openai" and params["data"] == SMALL_DATA and params["eval_limit"] == "3"
    assert params["split_seed"] == "0" and params["data_fingerprint"]
    assert params["allow_remote"] == "False" and params["endpoint_host"] == "127.0.0.1"
    assert run.data.metrics["baseline/malformed"] == 1 and run.data.metrics["baseline/retries"] == 1
    assert "harmonization/accuracy" in run.data.metrics
    local = mlflow.artifacts.download_artifacts(run_id=first.run_id, artifact_path="predictions",
                                                dst_path=str(tmp_path / "dl"))
    records = [json.loads(line) for line in open(f"{local}/harmonization.jsonl")]
    assert [r["response_status"] for r in records].count("malformed") == 1
    broken = next(r for r in records if r["response_status"] == "malformed")
    assert broken["output"] == "" and broken["parse_status"] == "failed" and broken["scores"]["correct"] == 0
    assert {"id", "reference", "output", "parsed", "parse_status", "scores"} <= set(records[0])

    second = run_baseline(config)  # only the malformed example is asked again
    assert len(server.bodies) == 5 and second.counts["cached"] == 2 and second.counts["ok"] == 1
    third = run_baseline(config)  # everything cached: zero requests
    assert len(server.bodies) == 5 and third.counts["requests_sent"] == 0 and third.counts["cached"] == 3


# ---------------------------------------------------------------- a local chat model


def test_local_backend_baseline_on_the_tiny_model(store, tiny_model_dir):
    config = BaselineConfig(backend="local", model=str(tiny_model_dir), tasks="labeling,harmonization",
                            data=SMALL_DATA, eval_limit=2, max_new_tokens=16, device="cpu", study="local")
    result = run_baseline(config)
    run = mlflow.get_run(result.run_id)
    assert run.data.tags["role"] == "baseline" and run.data.params["backend"] == "local"
    assert run.data.params["endpoint_host"] == "in-process"
    assert {"labeling/f1_macro", "labeling/f1_macro_supported", "harmonization/accuracy", "baseline/ok"} <= set(
        run.data.metrics
    )
    assert result.counts["ok"] == 4 and result.counts["requests_sent"] == 4
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "predictions")}
    assert artifacts == {f"predictions/{t}.{kind}" for t in ("labeling", "harmonization") for kind in ("jsonl", "json")}
    assert run.data.metrics["headline"] == pytest.approx(
        (run.data.metrics["labeling/f1_macro"] + run.data.metrics["harmonization/accuracy"]) / 2)
    table = mlflow.load_table("predictions/harmonization.json", run_ids=[result.run_id])
    assert len(table) == 2 and set(table["response_status"]) <= {"ok", "malformed", "failed"}
