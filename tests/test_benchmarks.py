"""The benchmark harness: its reference method, its measurements and its MLflow run (tiny model)."""
from __future__ import annotations

import json

import mlflow
import pytest
import torch

from benchmarks.__main__ import main as benchmark_main
from benchmarks.architectures import ARCHITECTURES, architecture_config
from benchmarks.hardware import matmul_peak_flops, peak_rss_mb
from benchmarks.reference import PaddingCounter, WholeSequenceCollator
from benchmarks.throughput import main as throughput_main
from pipelines.models import MODEL_PRESETS
from pipelines.train.encoding import IGNORE_INDEX, ResponseOnlyCollator

# Parameter counts of the published checkpoints (rounded), which the configs must reproduce.
PUBLISHED_PARAMS = {"smollm2-135m": 134.5e6, "opt-350m": 331e6, "llama-3.2-1b": 1.236e9,
                    "phi-4-mini": 3.836e9, "qwen3-4b": 4.022e9, "mistral-7b": 7.248e9}


def test_whole_sequence_loss_labels_every_real_token_and_counts_padding():
    batch = [{"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7]}, {"input_ids": [8], "labels": [8]}]
    reference = PaddingCounter(WholeSequenceCollator(pad_token_id=0))
    out = reference(batch)
    assert out["labels"].tolist() == [[5, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert reference.padded_tokens == 6
    ours = ResponseOnlyCollator(pad_token_id=0)(batch)
    assert ours["labels"].tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]


def test_machine_facts_are_positive():
    assert matmul_peak_flops("cpu", torch.float32, size=128, repeats=2) > 1e6
    assert peak_rss_mb() > 10


@pytest.mark.parametrize("preset", list(ARCHITECTURES))
def test_architectures_match_the_published_sizes_and_preset_targets(preset):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(architecture_config(preset))
    params = sum(p.numel() for p in model.parameters())
    assert params == pytest.approx(PUBLISHED_PARAMS[preset], rel=0.02)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert set(MODEL_PRESETS.get(preset).lora_targets) <= names


def test_throughput_script_on_cpu(tmp_path, capsys):
    out = tmp_path / "throughput.json"
    assert throughput_main(["--device", "cpu", "--presets", "smollm2-135m", "--seq", "16", "--steps", "1",
                            "--output-json", str(out)]) == 0
    row = json.loads(out.read_text())["presets"]["smollm2-135m"]
    assert row["train_tokens_per_s"] > 0 and row["decode_tokens_per_s"] > 0 and 0 < row["mfu"] < 1
    assert "| smollm2-135m |" in capsys.readouterr().out
    assert throughput_main(["--presets", "gpt-5"]) == 2


def test_throughput_precision_follows_the_fine_tunes_rule():
    import torch

    from benchmarks.throughput import precision_dtype

    assert precision_dtype("auto", "cpu") == torch.float32 and precision_dtype("auto", "cuda:0") == torch.bfloat16
    assert precision_dtype("bf16", "cpu") == torch.bfloat16 and precision_dtype("fp32", "cuda") == torch.float32


def test_benchmark_end_to_end_on_a_tiny_model_logs_a_run(tiny_model_dir, tracking_store, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = benchmark_main(["--model", str(tiny_model_dir), "--train-per-task", "2", "--eval-per-task", "2",
                           "--epochs", "1", "--reference-max-new-tokens", "8", "--eval-batch-size", "4",
                           "--output-json", str(out), "--experiment", "bench"])
    assert code == 0
    result = json.loads(out.read_text())
    measures = [r["measure"] for r in result["rows"]]
    assert measures == ["training", "eval labeling", "eval labeling (free, batched)", "eval harmonization",
                        "eval harmonization (free, batched)", "eval impression"]
    for row in result["rows"]:
        assert row["reference"] > 0 and row["ours"] > 0
        assert row["ratio"] == pytest.approx(row["ours"] / row["reference"])
    facts = result["facts"]
    assert facts["train_padding_fraction_ours"] <= facts["train_padding_fraction_reference"]
    assert facts["eval_labeling_ours_f1_macro"] >= 0 and facts["model_load_second_s"] > 0
    assert 0 < facts["train_mfu_ours"] < 1 and facts["peak_rss_mb"] > 0
    printed = capsys.readouterr().out
    assert "| training | useful tokens/s |" in printed and "matrix-multiply peak" in printed

    run = mlflow.search_runs(experiment_names=["bench"], output_format="list")[0]
    assert run.data.tags["role"] == "benchmark" and run.data.params["epochs"] == "1"
    assert run.data.metrics["training/ratio"] == pytest.approx(result["rows"][0]["ratio"])
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"benchmark.md", "benchmark.json"} <= artifacts


def test_benchmark_rejects_bad_options_before_measuring(capsys):
    assert benchmark_main(["--epochs", "0", "--no-log"]) == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err
    assert benchmark_main(["--tasks", "labeling,xray", "--no-log"]) == 2


def test_study_estimate_scales_with_the_measured_rates():
    from benchmarks.study_estimate import estimate_study

    rates = {"train_tokens_per_s": 1000.0, "prefill_tokens_per_s": 10000.0, "decode_tokens_per_s": 100.0}
    slow, missing = estimate_study("studies/demo.yaml", {"presets": {"smollm2-135m": rates}})
    fast, _ = estimate_study("studies/demo.yaml",
                             {"presets": {"smollm2-135m": {k: 2 * v for k, v in rates.items()}}})
    assert slow and not missing and all(e.train_hours > 0 and e.eval_hours > 0 for e in slow)
    for a, b in zip(slow, fast, strict=True):
        assert b.hours == pytest.approx(a.hours / 2)
    _, unmeasured = estimate_study("studies/demo.yaml", {"presets": {}})
    assert unmeasured == [e.name for e in slow]


def test_shared_prefix_harmonization_scoring_answers_as_the_previous_scoring(tiny_model_dir):
    from benchmarks.harmonization_scoring import measure
    from pipelines.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(tiny_model_dir, "fp32", "cpu")
    descriptions = ["AX T2 FLAIR", "sag_t1_mprage", "DWI b1000 TRACE", "ADC map", "SWI minIP", "localizer",
                    "t2_tse_tra_p2_320", "Ax DWI ADC"]
    result = measure(model, tokenizer, descriptions, batch_size=3, repeats=1)
    assert result["same_answers"] is True
    assert result["descriptions"] == 8 and result["ratio"] > 0
