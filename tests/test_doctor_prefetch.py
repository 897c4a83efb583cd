"""``doctor`` names what a config lacks on this machine; ``prefetch`` puts it where an offline run finds it."""

from __future__ import annotations



from common.cli import main
from common.config import load_config
from common.tasks.mbpp import read_tasks_jsonl
from tests.helpers import REPO

CONFIGS = REPO / "configs"


def test_doctor_passes_the_smoke_config_and_names_the_gaps_of_the_paper_one(monkeypatch, capsys):
    assert main(["doctor", "--config", str(CONFIGS / "smoke.yaml")]) == 0
    out = capsys.readouterr().out
    assert "sandbox" in out and "torch" in out and "0 missing" in out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MBPP_PATH", raising=False)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    assert main(["doctor", "--config", str(CONFIGS / "paper.yaml"), "--set", "model.path=no-org/not-cached"]) == 1
    out = capsys.readouterr().out
    assert "missing MBPP" in out and "MBPP_PATH" in out
    assert "missing model" in out and "prefetch" in out
    assert "missing stage-1 API key" in out and "GEMINI_API_KEY" in out


def test_prefetch_to_a_folder_then_run_offline_from_it(monkeypatch, tmp_path, capsys, tiny_model):
    """A fake hub: ``load_dataset`` serves the demo tasks, ``snapshot_download`` copies a saved tiny model."""
    import datasets
    import huggingface_hub

    hub_model = tmp_path / "hub" / "tiny-org" / "tiny-model"
    model, tokenizer, _ = tiny_model("tiny-gemma3")
    model.save_pretrained(hub_model)
    tokenizer.save_pretrained(hub_model)
    demo = read_tasks_jsonl(REPO / "common" / "resources" / "demo_tasks.jsonl")
    calls = []

    def fake_load_dataset(name, config):
        calls.append((name, config))
        return datasets.DatasetDict({"test": datasets.Dataset.from_list(demo)})

    def fake_snapshot(repo_id, local_dir=None, revision=None):
        import shutil

        calls.append((repo_id, local_dir))
        shutil.copytree(tmp_path / "hub" / repo_id, local_dir, dirs_exist_ok=True)
        return local_dir

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.delenv("MBPP_PATH", raising=False)
    out_dir = tmp_path / "fetched"
    assert main(["prefetch", "--config", str(CONFIGS / "smoke.yaml"), "--set", "data.source=hub", "--set",
                 "model.source=hub", "--set", "model.path=tiny-org/tiny-model", "--to", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert f"export MBPP_PATH={out_dir / 'mbpp.jsonl'}" in printed and "model.source=local" in printed
    assert calls == [("mbpp", "full"), ("tiny-org/tiny-model", str(out_dir / "models" / "tiny-gemma3"))]
    assert len(read_tasks_jsonl(out_dir / "mbpp.jsonl")) == len(demo)
    # the offline node: the same preset, pointed at the folders
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from common.models.loading import load_model

    config = load_config(CONFIGS / "smoke.yaml", [f"model.path={out_dir / 'models' / 'tiny-gemma3'}",
                                                  "model.source=local"])
    loaded, _ = load_model(config.model)[:2]
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())


def test_prefetch_says_when_there_is_nothing_to_download(capsys):
    assert main(["prefetch", "--config", str(CONFIGS / "smoke.yaml")]) == 0
    assert "nothing to download" in capsys.readouterr().out
