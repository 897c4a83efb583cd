"""``python -m common <command>``: the headless twin of every notebook.

Each stage command takes the same three doors into the config (``--config`` YAML, ``--set key=value`` overrides,
``--run-dir``) and calls one function in the package, imported lazily so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .artifacts import ArtifactError
from .config import ConfigError, field_help, load_config, to_dict
from .data import DataError

DEFAULT_CONFIG = "configs/demo.yaml"

# command -> (module, function, extra keyword arguments). Every function is fn(config, run_dir, force=..., **extra).
STAGE_COMMANDS: dict[str, tuple[str, str, dict]] = {
    "prepare": ("common.stage1", "prepare_mbpp", {}),
    "generate-candidates": ("common.stage1", "generate_candidates", {}),
    "label-pairs": ("common.stage1", "label_pairs", {}),
    "dpo": ("common.training", "run_dpo_stage", {"stage": "dpo"}),
    "self-generate": ("common.self_generation", "run_self_generation", {}),
    "dpo-further": ("common.training", "run_dpo_stage", {"stage": "dpo_further"}),
    "evaluate": ("common.evaluation", "run_evaluation", {}),
    "report": ("common.report", "run_report", {}),
    "run": ("common.pipeline", "run_pipeline", {}),
}
STAGE_HELP = {
    "prepare": "stage 1: load MBPP with the paper's splits and save them to the run dir",
    "generate-candidates": "stage 1a: candidate solutions per train task (api / local / rewrite generator)",
    "label-pairs": "stage 1b: sandbox-validate candidates and label MI preference pairs",
    "dpo": "stage 1c: LoRA DPO on the global pairs -> the -dpo adapter",
    "self-generate": "stage 2a: the -dpo model samples its own solutions -> local pairs",
    "dpo-further": "stage 2c: continue the -dpo adapter on the local pairs -> -dpo-further",
    "evaluate": "stage 3: sample, execute and score baseline / -dpo / -dpo-further on the test split",
    "report": "stage 3: tables (mean ± std over runs) and figures",
    "run": "every stage in order, skipping finished ones, then print the table",
}


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="pipeline preset YAML (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set dpo.learning_rate=1e-5 or --set model=gemma-3-4b-it")
    parser.add_argument("--run-dir", default=None, help="artifact folder (default: runs/<run_name>)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m common", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in STAGE_COMMANDS:
        sub = commands.add_parser(name, help=STAGE_HELP[name])
        _add_config_args(sub)
        sub.add_argument("--force", action="store_true", help="recompute even when the artifact is complete")
    config_cmd = commands.add_parser("config", help="print the resolved config (or every field with its help)")
    _add_config_args(config_cmd)
    config_cmd.add_argument("--help-fields", action="store_true", help="list every field, its default and help")
    stats = commands.add_parser("mi-stats", help="Maintainability Index statistics of MBPP reference solutions")
    _add_config_args(stats)
    stats.add_argument("--split", default="train")
    convert = commands.add_parser("convert-model", help="convert the bundled Gemma-3 270M GGUF to a cached copy")
    convert.add_argument("--force", action="store_true")
    return parser


def run_dir_for(args: argparse.Namespace, config) -> Path:
    return Path(args.run_dir) if args.run_dir else Path("runs") / config.run_name


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        if args.command == "convert-model":
            from .models import ensure_gemma_270m

            print(ensure_gemma_270m(force=args.force))
            return 0
        config = load_config(args.config, args.overrides)
        if args.command == "config":
            import yaml

            print("\n".join(field_help()) if args.help_fields else yaml.safe_dump(to_dict(config), sort_keys=False))
            return 0
        if args.command == "mi-stats":
            from .reference_stats import print_reference_mi

            print_reference_mi(config, args.split, run_dir_for(args, config) if args.run_dir else None)
            return 0
        module, function, extra = STAGE_COMMANDS[args.command]
        stage = getattr(importlib.import_module(module), function)
        stage(config, run_dir_for(args, config), force=args.force, **extra)
        return 0
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (ArtifactError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
