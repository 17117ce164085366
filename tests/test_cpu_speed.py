"""The cpu preset on CPUs of other speeds: the training probe and the limits it sizes."""
from __future__ import annotations

import logging

import pytest
import torch

from pipelines.config import (
    CPU_COSTS,
    CPU_LIMIT_SECONDS,
    CPU_WALL_SECONDS,
    cpu_expected_seconds,
    cpu_preset,
    cpu_train_limits,
)
from pipelines.train import cpu_speed

TASKS = ("labeling", "harmonization", "impression")


def _bump(limits: str) -> str:
    return ",".join(f"{t}={int(n) + 10}" for t, n in (item.split("=") for item in limits.split(",")))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
# below 0.85 added copies leave the floor of 10 reports (the next tests)
@pytest.mark.parametrize("speed,noise_only", [(1.0, False), (0.95, False), (0.9, False), (0.85, False),
                                              (1.0, True), (0.85, True), (0.7, True)])
def test_the_limits_are_the_most_reports_that_fit_the_budget_at_each_speed(speed, precision, noise_only):
    limits = cpu_train_limits(TASKS, precision, 1, 1, speed, noise_only)
    expected = cpu_expected_seconds(TASKS, limits, precision, 1, 1, speed, noise_only)
    assert expected <= CPU_WALL_SECONDS
    bumped = cpu_expected_seconds(TASKS, _bump(limits), precision, 1, 1, speed, noise_only)
    assert bumped > CPU_WALL_SECONDS - 30 / speed
    # slower means fewer reports, never more
    faster = cpu_train_limits(TASKS, precision, 1, 1, min(1.0, speed + 0.05), noise_only)
    counts = [[int(item.split("=")[1]) for item in text.split(",")] for text in (limits, faster)]
    assert all(a <= b for a, b in zip(*counts, strict=True))


def test_a_cpu_too_slow_for_the_series_keeps_ten_reports_and_says_how_long_it_will_take(monkeypatch, caplog):
    monkeypatch.setattr(cpu_speed, "relative_speed", lambda precision: 0.5)
    with caplog.at_level(logging.WARNING, logger="pipelines.config"):
        preset = cpu_preset(TASKS, "fp32", "cpu", series_noise=1)
    assert preset["task_train_limits"] == "labeling=10,impression=10"  # 0 would mean every report
    assert preset["extra_tags"] == {"cpu_speed": "0.5"}
    minutes = round(cpu_expected_seconds(TASKS, "labeling=10,impression=10", "fp32", 1, 1, 0.5) / 60)
    assert minutes * 60 > CPU_LIMIT_SECONDS
    assert f"about {minutes} minutes" in caplog.text and "0.50x" in caplog.text
    # scoring alone takes twice as long at half the speed
    scoring = 2 * CPU_COSTS["harmonization"].score_seconds
    assert cpu_expected_seconds(("harmonization",), "", "fp32", 0, 0, 0.5) > scoring


def test_a_faster_cpu_keeps_the_measured_recipe(monkeypatch, caplog):
    monkeypatch.setattr(cpu_speed, "relative_speed", lambda precision: 2.0)
    with caplog.at_level(logging.WARNING, logger="pipelines.config"):
        preset = cpu_preset(TASKS, "fp32", "cpu")
    assert preset["task_train_limits"] == cpu_train_limits(TASKS, "fp32", 1, 1) and preset["extra_tags"] == {
        "cpu_speed": "1"}
    assert (preset["series_noise"], preset["series_noise_only"]) == (1, False)
    assert caplog.text == ""


def test_a_slow_cpu_is_told_its_reports_are_too_few_to_learn_from(monkeypatch, caplog):
    monkeypatch.setattr(cpu_speed, "relative_speed", lambda precision: 0.7)
    with caplog.at_level(logging.WARNING, logger="pipelines.config"):
        preset = cpu_preset(TASKS, "fp32", "cpu")
    # the recipe stays (docs/cpu_preset.md: neither trade passed its rule), and the log says what it costs
    assert (preset["series_noise"], preset["series_noise_only"]) == (1, False)
    assert preset["task_train_limits"] == "labeling=10,impression=10"
    assert "only 10 labeling and 10 impression reports per epoch" in caplog.text and "0.70x" in caplog.text
    # the copies in place of the series cost what plain series cost, and leave the reports of no copies
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipelines.config"):
        only = cpu_preset(TASKS, "fp32", "cpu", series_noise_only=True)
    assert only["task_train_limits"] == cpu_train_limits(TASKS, "fp32", 0, 1, 0.7) == "labeling=150,impression=50"
    assert "too few" not in caplog.text
    # a subset whose reports reach the minimum is not warned
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipelines.config"):
        cpu_preset(("harmonization", "impression"), "fp32", "cpu")
    assert caplog.text == ""


@pytest.mark.parametrize("precision,rate,speed", [
    ("fp32", 0.52 * 236.7, 0.5), ("fp32", 236.7, 1.0), ("bf16", 1.33 * 377.6, 1.3), ("auto", 1.0, 0.05),
])
def test_relative_speed_divides_by_the_reference_reading_and_rounds_down(monkeypatch, precision, rate, speed):
    seen = {}

    def measured(model, dtype, **kwargs):
        seen["dtype"] = dtype
        return rate

    monkeypatch.setattr(cpu_speed, "train_tokens_per_second", measured)
    assert cpu_speed.relative_speed(precision) == speed
    assert seen["dtype"] == (torch.bfloat16 if precision == "bf16" else torch.float32)


def test_the_probe_times_real_training_steps():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    rate = cpu_speed.train_tokens_per_second(model, torch.float32, batch=2, seq=16, steps=2, warmup=1, rounds=2)
    assert rate > 0
    after = dict(model.named_parameters())
    assert all(not torch.equal(before[n], after[n]) for n in before)  # the optimizer stepped
