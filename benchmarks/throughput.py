"""Per-token throughput of each preset's architecture (random weights): LoRA training, prefill, decoding.

Usage:
    python -m benchmarks.throughput --device cuda                    # every preset, bf16
    python -m benchmarks.throughput --device cpu --presets smollm2-135m --steps 3
    python -m benchmarks.throughput --device cpu --presets smollm2-135m --precision bf16   # CPUs with bf16 units
    python -m benchmarks.throughput --device cuda --output-json throughput.json

Needs only torch, transformers and peft (no weights, no MLflow), so it runs on any GPU machine.
Training: LoRA (r 8, q/v or the preset's targets) with AdamW (fused on CUDA) and, in bf16 (the
default on a GPU, `--precision bf16` elsewhere), bf16 weights under autocast as the fine-tune's
`--precision bf16` loads them; batch 4 x `--seq` tokens, no padding; prefill: batch 16 forward
passes; decoding: batch 16, greedy, 64 new tokens after a `--seq`-token prompt. Model FLOP utilization is against the
measured matrix-multiply peak (benchmarks.hardware). README's paper-study estimate uses these.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from benchmarks.architectures import ARCHITECTURES, architecture_config
from benchmarks.hardware import lora_training_flops_per_token, matmul_peak_flops, peak_gpu_mb, timed
from pipelines.train.cpu_speed import train_tokens_per_second

TRAIN_BATCH, EVAL_BATCH, NEW_TOKENS = 4, 16, 64


def build_model(preset: str, device: str, dtype: torch.dtype):
    """The preset's architecture with random weights, on `device`, wrapped with LoRA."""
    from transformers import AutoModelForCausalLM

    from pipelines.models import MODEL_PRESETS
    from pipelines.train.lora import wrap_lora

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(architecture_config(preset), dtype=dtype)
    return wrap_lora(model, MODEL_PRESETS.get(preset).lora_targets)


def precision_dtype(precision: str, device: str) -> torch.dtype:
    """'auto' is bf16 on a GPU and fp32 elsewhere (pipelines.models.resolve_precision's rule)."""
    from pipelines.models import TORCH_DTYPES

    if precision == "auto":
        precision = "bf16" if device.startswith("cuda") else "fp32"
    return getattr(torch, TORCH_DTYPES[precision])


def measure(preset: str, device: str, seq: int, steps: int, precision: str = "auto") -> dict[str, float]:
    """tokens/s of training, prefill and decoding for one preset."""
    dtype = precision_dtype(precision, device)
    model = build_model(preset, device, dtype)
    params = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    vocab = model.config.vocab_size
    autocast = torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)
    train_tps = train_tokens_per_second(model, dtype, batch=TRAIN_BATCH, seq=seq, steps=steps, warmup=2, device=device)

    model.eval()
    prompts = torch.randint(0, vocab, (EVAL_BATCH, seq), device=device)
    with torch.no_grad(), autocast:
        model(input_ids=prompts)
        with timed(device) as p:
            for _ in range(steps):
                model(input_ids=prompts)
        warm = prompts[:, :8]
        model.generate(input_ids=warm, attention_mask=torch.ones_like(warm), max_new_tokens=4, min_new_tokens=4,
                       do_sample=False, pad_token_id=0)
        with timed(device) as g:
            model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                           max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=0)
    prefill_tps = EVAL_BATCH * seq * steps / p.seconds
    decode_s = max(g.seconds - p.seconds / steps, 1e-9)
    result = {"params": float(params), "train_tokens_per_s": train_tps, "prefill_tokens_per_s": prefill_tps,
              "decode_tokens_per_s": EVAL_BATCH * NEW_TOKENS / decode_s,
              "train_model_tflops": train_tps * lora_training_flops_per_token(params) / 1e12,
              "peak_gpu_mb": peak_gpu_mb(device)}
    return result


def release(device: str) -> None:
    """Free the last preset's GPU memory and restart the peak count for the next one."""
    import gc

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def main(argv: list[str] | None = None) -> int:
    from pipelines.cli import ArgumentParser
    from pipelines.config import PRECISIONS

    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N (default: cuda when there is one, else cpu)")
    parser.add_argument("--presets", default=",".join(ARCHITECTURES),
                        help=f"comma-separated preset names: {', '.join(ARCHITECTURES)} (default: all)")
    parser.add_argument("--seq", type=int, default=256,
                        help="tokens per sequence (typical multi-task length) (default: 256)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement (default: 10)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: bf16 on a GPU, fp32 elsewhere (the fine-tune's rule) (default: auto)")
    parser.add_argument("--output-json", default="", help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [p for p in presets if p not in ARCHITECTURES]
    if unknown:
        print(f"error: unknown preset(s) {unknown}; known: {', '.join(ARCHITECTURES)}", file=sys.stderr)
        return 2
    dtype = precision_dtype(args.precision, args.device)
    peak = matmul_peak_flops(args.device, dtype)
    rows = {}
    print(f"matmul peak on {args.device}: {peak / 1e9:,.0f} GFLOP/s ({dtype})")
    print("| preset | params | train tokens/s | MFU | prefill tokens/s | decode tokens/s (batch 16) | peak GPU MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for preset in presets:
        r = measure(preset, args.device, args.seq, args.steps, args.precision)
        release(args.device)
        r["mfu"] = r["train_model_tflops"] * 1e12 / peak
        rows[preset] = r
        print(f"| {preset} | {r['params'] / 1e6:.0f}M | {r['train_tokens_per_s']:,.0f} | {r['mfu']:.1%} | "
              f"{r['prefill_tokens_per_s']:,.0f} | {r['decode_tokens_per_s']:,.0f} | {r['peak_gpu_mb']:,.0f} |",
              flush=True)
    if args.output_json:
        Path(args.output_json).write_text(json.dumps({"device": args.device, "precision": str(dtype), "seq": args.seq,
                                                      "matmul_peak_tflops": peak / 1e12, "presets": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
