"""An unusable output folder or a disk without room fails before any MLflow run, naming the folder."""
from __future__ import annotations

import os
import re
import shutil

import mlflow
import pytest
from transformers import AutoModelForCausalLM

from pipelines import finetune
from pipelines.config import FinetuneConfig
from pipelines.train import preflight
from pipelines.train.recipe import build_lora_model

BASE = ["--tasks", "harmonization", "--data", "synthetic?reports=20&series=20", "--epochs", "1",
        "--checkpoint-epochs", "1", "--train-limit", "2", "--eval-limit", "2"]


def _runs(uri: str) -> list:
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def test_output_dir_below_a_regular_file(store, tiny_model_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / "outputs"
    assert finetune.main(["--model", str(tiny_model_dir), *BASE, "--output-dir", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: output folder {target} is not writable ({blocker} is not a folder); choose another "
                   "with --output-dir or fix its permissions")
    assert _runs(store) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through mode 0o500; the regular-file case above "
                                              "covers an unwritable folder for root")
def test_read_only_output_dir(store, tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert finetune.main(["--model", str(tiny_model_dir), *BASE, "--output-dir", str(folder)]) == 2
    finally:
        folder.chmod(0o700)
    err = capsys.readouterr().err
    assert f"output folder {folder} is not writable" in err and "Permission denied" in err
    assert _runs(store) == []


def test_not_enough_free_space(store, tiny_model_dir, tmp_path, capsys):
    """The real free space of tmp_path's disk, and a reserve 1 GB above it: the check must refuse."""
    free_mb = shutil.disk_usage(tmp_path).free // preflight.MB
    code = finetune.main(["--model", str(tiny_model_dir), *BASE, "--output-dir", str(tmp_path / "out"),
                          "--disk-reserve-mb", str(free_mb + 1024)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"not enough free space for output folder {tmp_path / 'out'}: needs about" in err
    needed, available = map(float, re.search(r"needs about ([\d.]+) GB .* ([\d.]+) GB available", err).groups())
    assert needed > available
    assert _runs(store) == []


def test_estimate_counts_the_adapter_peft_builds(tiny_model_dir, tmp_path):
    """The estimate's adapter size is the LoRA adapter's real size (fp32 weights in safetensors)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = FinetuneConfig(model=str(tiny_model_dir), lora_r=4)
    need = preflight.estimate(model, tiny_model_dir, ("q_proj", "v_proj"), 4, checkpoints=2, test_examples=10,
                              reserve_mb=0)
    peft_model = build_lora_model(model, config, ("q_proj", "v_proj"))
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert need.adapter == 4 * trainable
    peft_model.save_pretrained(tmp_path / "adapter")
    written = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    assert need.adapter <= written < need.adapter + 64 * 1024  # plus the safetensors header
    assert need.tokenizer > 0 and need.total > 2 * need.per_checkpoint
