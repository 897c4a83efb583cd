"""The sharded path without GPUs: ``accelerate launch`` with configs/accelerate/fsdp.yaml on 2 CPU processes (gloo)
trains each adapter stage of the smoke preset, the weights really are FSDP2-sharded DTensors during training, and
rank 0 saves one adapter (gathered from both shards) that loads and differs from the base model."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from common.models.loading import load_model
from common.pipeline.artifacts import RunDir, read_manifest
from tests.helpers import REPO, run_stages, smoke_config
from tests.test_pipeline import ENV

OVERRIDES = ["stage1.mutants=2", "recipe=[prepare,candidates,pairs,singles,targets,dpo,sft,kto,evaluate,report]"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp") / "run"
    run_stages(smoke_config(*OVERRIDES), root, "prepare", "candidates", "pairs", "singles", "targets")
    return RunDir(root)


@pytest.mark.parametrize("stage", ["dpo", "sft", "kto"])
def test_fsdp_on_two_cpu_processes_trains_and_saves_one_adapter(run, stage):
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    sets = [arg for item in OVERRIDES for arg in ("--set", item)]
    done = subprocess.run([*accelerate, "--config_file", str(REPO / "configs/accelerate/fsdp.yaml"),
                           "--num_processes", "2", "--main_process_port", "0", "-m", "common", stage, "--config",
                           "configs/smoke.yaml", *sets, "--run-dir", str(run.root)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    metrics = read_manifest(run.stage_dir(stage))["metrics"]
    assert metrics["world_size"] == 2 and metrics["distributed_type"] == "FSDP", metrics
    config = smoke_config(*OVERRIDES)
    base = load_model(config.model, device="cpu")[0]
    tuned = load_model(config.model, adapter=run.stage_dir(stage), device="cpu")[0]
    lora_b = [p for name, p in tuned.named_parameters() if "lora_B" in name]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: the saved adapter was trained
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, tuned(ids).logits)
