"""``python -m common doctor``: what this machine can run for a config, and what to do about each gap.

Like ``accelerate env`` / ``huggingface-cli env``, in a few seconds and without downloading anything: torch and
the accelerator (bf16), optional backends (bitsandbytes, vLLM), whether the config's MBPP and models are on disk
or need the hub, the API key of an ``api`` generator or backend, the sandbox's isolation level, free disk for the
caches. Each line is ``ok``, ``warn`` (runs, with a caveat) or ``missing`` (a stage will fail), with the fix.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 1 << 30
MIN_FREE_GIB = 20  # a 7B model's weights plus the datasets and adapters of one run


@dataclass
class Check:
    name: str
    state: str  # ok | warn | missing
    detail: str
    fix: str = ""


def _torch() -> list[Check]:
    import torch

    checks = [Check("torch", "ok", torch.__version__)]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        checks.append(Check("accelerator", "ok", f"CUDA {torch.version.cuda}: {names}"))
        bf16 = torch.cuda.is_bf16_supported()
        checks.append(Check("bf16", "ok" if bf16 else "warn", "supported" if bf16 else "not supported",
                            "" if bf16 else "use dtype: float16 (model configs) and precision: fp16"))
    else:
        checks.append(Check("accelerator", "warn", "none: CPU only (the demo and tests run; paper-sized runs need a GPU)",
                            "on a GPU machine install requirements-gpu.txt"))
    return checks


def _optional(module: str, what: str, fix: str) -> Check:
    found = importlib.util.find_spec(module) is not None
    return Check(module, "ok" if found else "warn", f"installed ({what})" if found else f"not installed ({what})",
                 "" if found else fix)


def _hub_cached(repo: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, "config.json", revision=revision), str)
    except Exception:  # noqa: BLE001 - an old huggingface_hub or a malformed id: treat as not cached
        return False


def _model(label: str, cfg: Any) -> Check:
    if cfg is None:
        return Check(label, "ok", "same as model")
    if cfg.source == "tiny":
        return Check(label, "ok", f"{cfg.name}: tiny random model, built locally")
    if cfg.source == "embedded":
        from common.models.gguf import cache_root

        converted = (cache_root() / "gemma-3-270m").is_dir()
        return Check(label, "ok", f"{cfg.name}: embedded GGUF package" + (", converted copy cached" if converted else
                                                                          ", converted on first use (~1 min)"))
    if cfg.source == "local":
        ok = bool(cfg.path) and Path(cfg.path).is_dir()
        return Check(label, "ok" if ok else "missing", f"{cfg.name}: local {cfg.path}",
                     "" if ok else "set model.path to the folder holding config.json and the weights")
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    cached = _hub_cached(cfg.path or "", cfg.revision)
    if cached:
        return Check(label, "ok", f"{cfg.name}: hub {cfg.path}, in the local cache")
    state = "missing" if offline else "warn"
    return Check(label, state, f"{cfg.name}: hub {cfg.path}, not in the local cache" +
                 (" and HF_HUB_OFFLINE=1" if offline else " (downloaded on first use)"),
                 "run `python -m common prefetch` with this config where the hub is reachable")


def _data(config: Any) -> Check:
    from common.tasks.mbpp import resolve_source

    source = resolve_source(config.data.source)
    if source == "demo":
        return Check("MBPP", "ok", "demo tasks bundled with the repository")
    if source == "hub":
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        return Check("MBPP", "missing" if offline else "warn", "from the hub" + (" while offline" if offline else ""),
                     "set MBPP_PATH (or data.source) to a local mbpp.jsonl, or `python -m common prefetch --to DIR`")
    ok = Path(source).is_file()
    return Check("MBPP", "ok" if ok else "missing", source, "" if ok else "data.source / MBPP_PATH: no such file")


def _api_keys(config: Any) -> list[Check]:
    checks = []
    for label, section, used in (("stage-1 API key", "stage1_sampling", config.stage1.generator == "api"),
                                 ("sampling API key", "sampling", config.sampling.backend == "api")):
        sampling = getattr(config, section)
        if used:
            present = bool(os.environ.get(sampling.api_key_env))
            checks.append(Check(label, "ok" if present else "missing", f"${sampling.api_key_env} "
                                + ("set" if present else "unset"), "" if present else
                                f"export {sampling.api_key_env}=... ({section}.api_key_env names the variable)"))
    return checks


def _sandbox() -> Check:
    from common.sandbox import isolation_level

    level = isolation_level()
    full = level.startswith("namespaces")
    return Check("sandbox", "ok" if full else "warn", level, "" if full else
                 "user namespaces are refused here: candidates run with rlimits only (docs/sandbox.md, Fallback)")


def _disk() -> Check:
    from common.models.gguf import cache_root

    hf = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    probe = next((p for p in (hf, cache_root(), Path.home()) if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free / GIB
    return Check("disk", "ok" if free >= MIN_FREE_GIB else "warn", f"{free:.0f} GiB free at {probe}",
                 "" if free >= MIN_FREE_GIB else "models and runs need tens of GiB; set HF_HOME / MI_ALIGN_CACHE "
                 "to a larger disk")


def diagnose(config: Any) -> list[Check]:
    checks = _torch()
    checks.append(_optional("bitsandbytes", "4/8-bit loading", "pip install bitsandbytes (only for quantization)"))
    checks.append(_optional("vllm", "sampling.backend: vllm", "pip install -r requirements-gpu.txt (GPU only)"))
    checks += [_data(config), _model("model", config.model), _model("generator_model", config.generator_model)]
    checks += _api_keys(config)
    checks += [_sandbox(), _disk()]
    return checks


def format_checks(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{c.state:<7} {c.name:<{width}}  {c.detail}" + (f"\n{'':<{width + 10}}-> {c.fix}" if c.fix else "")
             for c in checks]
    missing = sum(c.state == "missing" for c in checks)
    lines.append(f"{missing} missing, {sum(c.state == 'warn' for c in checks)} warnings")
    return "\n".join(lines)
