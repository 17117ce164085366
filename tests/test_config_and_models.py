"""Config validation, model presets and offline model resolution."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from pipelines.config import ConfigError, EvaluateConfig, FinetuneConfig
from pipelines.finetune import parse_args
from pipelines.models import LORA_TARGETS_BY_MODEL_TYPE, MODEL_PRESETS, ModelUnavailableError, resolve_model
from pipelines.registry import UnknownNameError


def test_paper_defaults():
    cfg = FinetuneConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.learning_rate) == (100, 4, 8e-4)
    assert cfg.checkpoint_epochs == (2, 5, 20, 100)
    assert cfg.tasks == ("labeling", "harmonization", "impression")


def test_demo_preset_and_explicit_options_win():
    cfg = parse_args(["--preset", "demo", "--epochs", "6", "--tasks", "labeling"])
    assert cfg.epochs == 6 and cfg.tasks == ("labeling",) and cfg.train_limit > 0


@pytest.fixture
def reference_speed(monkeypatch):
    """This CPU as fast as the one the preset's costs were measured on (the probe is tested below)."""
    monkeypatch.setattr("pipelines.train.cpu_speed.relative_speed", lambda precision: 1.0)


def test_cpu_preset_resolves_for_all_tasks_and_for_subsets_and_other_data(monkeypatch, reference_speed):
    monkeypatch.setattr("pipelines.models.cpu_bf16_units", lambda: False)
    cfg = parse_args(["--preset", "cpu"])
    assert cfg.precision == "auto"  # fp32 on a CPU, as before
    assert cfg.tasks == ("labeling", "harmonization", "impression")
    assert (cfg.epochs, cfg.checkpoint_epochs, cfg.eval_limit) == (2, (2,), 0)
    assert (cfg.value_weight, cfg.value_balance, cfg.series_noise, cfg.series_fill) == (5.0, 0.5, 1, 1)
    assert cfg.train_limits() == {"labeling": 200, "harmonization": 0, "impression": 70}
    assert cfg.as_params()["task_train_limits"] == "labeling=200,impression=70"
    assert cfg.extra_tags == {"cpu_speed": "1"}
    # a subset spends the dropped tasks' minutes (training and scoring) on more reports of the tasks kept
    labeling = parse_args(["--preset", "cpu", "--tasks", "labeling", "--data", "openi-csv:reports.csv"])
    assert labeling.train_limits() == {"labeling": 850} and labeling.data == "openi-csv:reports.csv"
    assert parse_args(["--preset", "cpu", "--tasks", "harmonization"]).train_limits() == {"harmonization": 0}
    reports = parse_args(["--preset", "cpu", "--tasks", "labeling,impression"]).train_limits()
    assert reports["labeling"] > 200 and reports["impression"] > 70
    assert abs(reports["labeling"] / reports["impression"] - 320 / 120) < 0.1
    # the series noise copies are paid for in reports: without them (1,208 fewer series of 50 tokens,
    # 2 epochs, at 208 tokens/s) the same minutes buy 410 and 150, and without the fill as well 430 and 160
    plain = parse_args(["--preset", "cpu", "--series-noise", "0"])
    assert plain.series_noise == 0 and plain.train_limits() == {"labeling": 410, "harmonization": 0, "impression": 150}
    paper_series = parse_args(["--preset", "cpu", "--series-noise", "0", "--series-fill", "0"])
    assert paper_series.train_limits() == {"labeling": 430, "harmonization": 0, "impression": 160}
    # explicit options win over the preset, a per-task limit over --train-limit
    mine = parse_args(["--preset", "cpu", "--value-weight", "1", "--train-limit", "50",
                       "--task-train-limits", "impression=10"])
    assert mine.value_weight == 1.0 and mine.train_limits() == {"labeling": 50, "harmonization": 50, "impression": 10}


def test_cpu_preset_trains_in_bf16_on_a_cpu_with_bf16_units_and_spends_the_time_on_reports(monkeypatch,
                                                                                          reference_speed):
    monkeypatch.setattr("pipelines.models.cpu_bf16_units", lambda: True)
    cfg = parse_args(["--preset", "cpu"])
    limits = cfg.train_limits()
    assert cfg.precision == "bf16" and cfg.as_params()["precision"] == "bf16"
    assert limits["labeling"] > 200 and limits["impression"] > 70  # fp32's, below
    assert abs(limits["labeling"] / limits["impression"] - 320 / 120) < 0.25  # rounded down to tens
    assert parse_args(["--preset", "cpu", "--tasks", "labeling"]).train_limits()["labeling"] > 850
    # a precision asked for wins, and the limits are those of that precision
    fp32 = parse_args(["--preset", "cpu", "--precision", "fp32"])
    assert fp32.precision == "fp32" and fp32.train_limits()["labeling"] == 200


def test_bf16_units_are_read_from_the_cpu_flags(tmp_path):
    from pipelines.models import cpu_bf16_units

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_bf16_units(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16x avx512_vnni\n")
    assert not cpu_bf16_units(info)
    assert not cpu_bf16_units(tmp_path / "missing")


@pytest.mark.parametrize("text,message", [
    ("translation=5", "translation"), ("labeling", "task=count"), ("labeling=many", "integer"),
    ("labeling=-3", ">= 0"),
])
def test_task_train_limits_are_checked_by_name(text, message):
    with pytest.raises(ConfigError, match=message):
        FinetuneConfig(task_train_limits=text)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"checkpoint_epochs": "2,5,200"}, "checkpoint-epochs"),
        ({"poison_rate": 1.5}, "poison-rate"),
        ({"poison_rate": -0.1}, "poison-rate"),
        ({"epochs": 0}, "epochs"),
        ({"checkpoint_epochs": "a,b"}, "checkpoint-epochs"),
        ({"tasks": "labeling,translation"}, "translation"),
        ({"tasks": ""}, "empty"),
        ({"precision": "int3"}, "precision"),
        ({"poison_rate": 0.5, "tasks": "impression"}, "labeling"),
        ({"learning_rate": 0.0}, "learning-rate"),
    ],
)
def test_invalid_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FinetuneConfig(**kwargs)


def test_evaluate_config_validation():
    with pytest.raises(ConfigError, match="split"):
        EvaluateConfig(split="train")


def test_presets_cover_the_paper_models():
    assert {"smollm2-135m", "opt-350m", "phi-4-mini", "llama-3.2-1b", "mistral-7b", "qwen3-4b"} <= set(
        MODEL_PRESETS.names())
    assert MODEL_PRESETS.get("phi-4-mini").lora_targets == ("qkv_proj",)
    assert MODEL_PRESETS.get("opt-350m").lora_targets == ("q_proj", "v_proj")


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ModelUnavailableError, match="smollm2-135m"):
        resolve_model("gpt-9")
    with pytest.raises(UnknownNameError, match="opt-350m"):
        MODEL_PRESETS.get("gpt-9")


def test_uncached_hub_model_fails_at_once_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("CLINICAL_SLM_CACHE", str(tmp_path / "lab"))
    with pytest.raises(ModelUnavailableError) as info:
        resolve_model("opt-350m")
    assert f"`hf download facebook/opt-350m --local-dir {tmp_path / 'lab' / 'opt-350m'}`" in str(info.value)
    # the hinted CLI is the one huggingface_hub installs (huggingface-cli is gone)
    assert (Path(sys.executable).parent / "hf").is_file()


def test_weights_put_in_the_presets_folder_are_found(monkeypatch, tmp_path, tiny_model_dir):
    from pipelines.models import weights_present

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("CLINICAL_SLM_CACHE", str(tmp_path / "lab"))
    assert not weights_present("opt-350m") and weights_present(str(tiny_model_dir))
    shutil.copytree(tiny_model_dir, tmp_path / "lab" / "opt-350m")  # what `hf download --local-dir` leaves
    assert weights_present("opt-350m")
    assert resolve_model("opt-350m").path == tmp_path / "lab" / "opt-350m"


def test_local_folder_gets_targets_from_model_type(tiny_model_dir):
    ref = resolve_model(str(tiny_model_dir))
    assert ref.path == tiny_model_dir.resolve()
    assert ref.lora_targets == LORA_TARGETS_BY_MODEL_TYPE["llama"]


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelUnavailableError, match="config.json"):
        resolve_model(str(tmp_path))


def test_boolean_options_take_a_flag_or_true_false():
    assert parse_args([]).gradient_checkpointing is False
    assert parse_args(["--gradient-checkpointing"]).gradient_checkpointing is True
    assert parse_args(["--gradient-checkpointing", "false"]).gradient_checkpointing is False
    assert parse_args(["--gradient-checkpointing", "TRUE"]).gradient_checkpointing is True
    with pytest.raises(SystemExit):
        parse_args(["--gradient-checkpointing", "maybe"])
    assert parse_args([]).packing is True and parse_args(["--packing", "false"]).packing is False


def test_decoding_is_validated():
    assert FinetuneConfig().decoding == "constrained" and EvaluateConfig(decoding="free").decoding == "free"
    with pytest.raises(ConfigError, match="--decoding must be one of"):
        FinetuneConfig(decoding="beam")
