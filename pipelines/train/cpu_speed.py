"""How fast this CPU trains the cpu preset's model, against the machine its costs were measured on.

The cpu preset sizes its data from training and scoring costs measured on one 2-core machine
(pipelines/config.py: CPU_COSTS, CPU_TRAIN_TOKENS_PER_SECOND). Two cores of another CPU can be
half as fast (a 2-core AMD EPYC without bf16 units read 0.52x and 0.70x; docs/cpu_preset.md), and the
same recipe then takes far longer than its 45 minutes. `relative_speed` times a few LoRA
training steps of the model's architecture (random weights: speed does not depend on their
values) with the shapes `benchmarks.throughput --seq 240` uses, the fastest of three rounds of
two steps (about 50 s on a 0.7x CPU), and divides by that benchmark's reading on the reference machine
(benchmarks/results/cpu-bf16-throughput.json).
"""
from __future__ import annotations

import logging
import math
import time

PROBE_BATCH, PROBE_SEQ, PROBE_STEPS, PROBE_WARMUP, PROBE_ROUNDS = 4, 240, 2, 1, 3
# benchmarks.throughput --device cpu --presets smollm2-135m --seq 240 --steps 3, on the machine
# CPU_COSTS were measured on (2-core AMD EPYC with AVX512-BF16).
REFERENCE_TRAIN_TOKENS_PER_SECOND: dict[str, float] = {"fp32": 236.7, "bf16": 377.6}
SPEED_STEP = 0.05  # speeds are rounded down to this step, so probe noise rarely moves the limits

log = logging.getLogger(__name__)


def train_tokens_per_second(model, dtype, *, batch: int = PROBE_BATCH, seq: int = PROBE_SEQ,
                            steps: int = PROBE_STEPS, warmup: int = PROBE_WARMUP, rounds: int = 1,
                            device: str = "cpu") -> float:
    """Training tokens/s of `model` (LoRA-wrapped) on random token batches, AdamW, after `warmup`
    steps: the fastest of `rounds` timed rounds of `steps` steps (other work on the machine only
    ever slows a round down, so the fastest is the machine's own speed)."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=8e-4, fused=device.startswith("cuda"))
    tokens = torch.randint(0, model.config.vocab_size, (batch, seq), device=device)
    autocast = torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)

    def step() -> None:
        with autocast:
            loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def timed_round() -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    model.train()
    for _ in range(warmup):
        step()
    return batch * seq * steps / min(timed_round() for _ in range(rounds))


def relative_speed(precision: str, model_name: str = "smollm2-135m") -> float:
    """This CPU's training speed for `model_name` in `precision` ("auto": fp32) over the reference
    machine's, rounded down to SPEED_STEP; at least SPEED_STEP."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from pipelines.models import TORCH_DTYPES, resolve_model
    from pipelines.train.lora import wrap_lora

    precision = precision if precision in REFERENCE_TRAIN_TOKENS_PER_SECOND else "fp32"
    dtype = getattr(torch, TORCH_DTYPES[precision])
    resolved = resolve_model(model_name)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolved.path), dtype=dtype)
    rate = train_tokens_per_second(wrap_lora(model, resolved.lora_targets), dtype, rounds=PROBE_ROUNDS)
    speed = max(SPEED_STEP, math.floor(rate / REFERENCE_TRAIN_TOKENS_PER_SECOND[precision] / SPEED_STEP) * SPEED_STEP)
    log.info("this CPU trains %s at %.0f tokens/s in %s, %.2fx the machine the cpu preset was measured on",
             model_name, rate, precision, speed)
    return round(speed, 2)
