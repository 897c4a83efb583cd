"""Writes the stage notebooks and the study notebook (run: ``python scripts/build_notebooks.py``).

Notebooks are thin on purpose: a papermill parameters cell, ``run_stage("<stage>", ...)`` (what the CLI command of
the same name calls), and cells that show what the stage produced. There is one notebook per stage declared in
``common/pipeline/stages.py``, at the path its declaration names; ``tests/test_pipeline.py`` executes them all, in
order, with the smoke config.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent

PARAMETERS = '''# Parameters (papermill: -p config_path configs/paper.yaml -p run_dir runs/x -y "overrides: [...]")
# overrides: --set style edits, e.g. ["model=gemma-3-4b-it", "dpo.learning_rate=1e-6"]
# run_dir: None means runs/<run_name>; force: recompute even when the artifact is complete
config_path = "configs/demo.yaml"
overrides = []
run_dir = None
force = False'''

SETUP = '''import os, sys
from pathlib import Path

# Run from the repository root whatever folder Jupyter started in, so configs/ and runs/ resolve the same way
# as for the CLI.
ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "common").is_dir())
os.chdir(ROOT)
sys.path.insert(0, str(ROOT))

from IPython.display import Image, Markdown, display
from common.config import load_config
from common.pipeline.artifacts import RunDir, load_dataset_dir, read_manifest

config = load_config(config_path, overrides)
run_dir = run_dir or f"runs/{config.run_name}"
run = RunDir(run_dir)
print(f"model {config.model.name}, data {config.data.source or 'MBPP_PATH/hub'}, run dir {run.root}")'''

SHOW_PNGS = '''for png in sorted(Path({folder}).glob("*.png")):
    print(png)
    display(Image(filename=str(png)))'''

# stage name -> (introduction, cells that show what the stage produced). Paths, titles and the call come from the
# stage's declaration (common/pipeline/stages.py); a stage without an entry here fails the build.
SHOW = {
    "prepare": (
        "MBPP *full* with the paper's split: the training pool is the train split (task_id 601-974) minus tasks whose "
        "reference defines a class (372 tasks). The prompt is the task text plus the signature of the last `def` of "
        "the reference; the asserts are never shown to the model. (The evaluation split is loaded by `evaluate`.)",
        ["from common.prompting.style import prompt_style\nfrom common.prompting.templates import build_prompt\n\n"
         "train = load_dataset_dir(run.stage_dir('prepare'))\nprint(len(train), 'training tasks')\n"
         "print(build_prompt(train[0], prompt_style(config.model), config.sampling.system_prompt))\n"
         "train.to_pandas()[['task_id', 'text']].head()"],
    ),
    "candidates": (
        "A generator writes several functionally different solutions per train task (the paper: Gemini 2.5 Pro, "
        "two per task; here `stage1.generator` picks `api`, `local` or the LLM-free `rewrite`). Every candidate "
        "runs against the task's asserts in the sandbox and is scored by MI.",
        ["import json\n\nprint(json.dumps(read_manifest(run.stage_dir('candidates'))['summary'], indent=2))\n"
         "load_dataset_dir(run.stage_dir('candidates')).to_pandas()"
         "[['task_id', 'candidate_index', 'origin', 'status', 'mi']].head(12)"],
    ),
    "pairs": (
        "Pairs where both solutions pass are labelled by radon's Maintainability Index: the higher-MI solution is "
        "*chosen*. Ties carry no preference and are dropped unless `stage1.keep_ties` (the paper preset) is set.",
        ["pairs_dir = run.stage_dir('pairs')\nprint((pairs_dir / 'summary.json').read_text())\n"
         "pairs = load_dataset_dir(pairs_dir)\n"
         "if len(pairs):\n    print('CHOSEN  (MI %.1f)\\n%s\\n' % (pairs[0]['chosen_mi'], pairs[0]['chosen']))\n"
         "    print('REJECTED (MI %.1f)\\n%s' % (pairs[0]['rejected_mi'], pairs[0]['rejected']))",
         SHOW_PNGS.format(folder="run.stage_dir('pairs')")],
    ),
    "dpo": (
        "LoRA DPO (TRL) on the base model with the stage-1 pairs; the reference model is the base with the adapter "
        "disabled. The result is the `-dpo` adapter.",
        ["import pandas as pd\n\npd.read_csv(run.stage_dir('dpo') / 'training_log.csv').tail(10)",
         SHOW_PNGS.format(folder="run.stage_dir('dpo')")],
    ),
    "self-generation": (
        "The `-dpo` model samples its own solutions for every train prompt over several rounds, re-queuing prompts "
        "with fewer than two passing samples together with the last failed solution. The max-MI and min-MI passing "
        "samples of each task form a pair.",
        ["out = run.stage_dir('self-generation')\nprint((out / 'rounds.json').read_text())\n"
         "print((out / 'summary.json').read_text())",
         SHOW_PNGS.format(folder="run.stage_dir('self-generation')")],
    ),
    "dpo-further": (
        "DPO again on the self-generated pairs, continuing the same adapter (loaded trainable). "
        "`dpo_further.stage2_reference` chooses the reference: the base model (`base`, the paper's intent) or a "
        "frozen copy of the stage-1 adapter (`stage1`). The result is `-dpo-further`.",
        ["import pandas as pd\n\nlog = run.stage_dir('dpo-further') / 'training_log.csv'\n"
         "pd.read_csv(log).tail(10) if log.is_file() else read_manifest(run.stage_dir('dpo-further'))",
         SHOW_PNGS.format(folder="run.stage_dir('dpo-further')")],
    ),
    "evaluate": (
        "baseline, `-dpo` and `-dpo-further` sample n solutions per test task (paper: 500 tasks, n=10, T=0.6, "
        "top_p=0.9) for several independent runs; every sample is executed in the sandbox, scored by MI and kept "
        "on disk.",
        ["import pandas as pd\n\npd.DataFrame([{**u, **read_manifest(run.stage_dir('evaluate') / u['folder'])"
         "['summary']} for u in read_manifest(run.stage_dir('evaluate'))['units']])"],
    ),
    "report": (
        "pass@k and the average MI of passing solutions per variant, as mean ± sample std over runs, the change "
        "against the baseline with paired tests, and the paper's numbers side by side when supplied.",
        ["display(Markdown((run.stage_dir('report') / 'tables.md').read_text()))",
         SHOW_PNGS.format(folder="run.stage_dir('report')")],
    ),
}
TRAINING_LOG = '''import pandas as pd

log = run.stage_dir("{stage}") / "training_log.csv"
pd.read_csv(log).tail(10) if log.is_file() else read_manifest(run.stage_dir("{stage}"))'''


def _training(stage: str, intro: str) -> tuple[str, list[str]]:
    return intro, [TRAINING_LOG.replace("{stage}", stage), SHOW_PNGS.format(folder=f"run.stage_dir('{stage}')")]


SHOW.update({
    "singles": (
        "KTO learns from unpaired examples: every candidate is labelled desirable or undesirable by the preference "
        "signal (`stage1.signal`: exec = passes, compile = compiles vs corrupted copies, mi/pylint = above/below the "
        "task's median among passing candidates, or a lexicographic list such as `exec,mi`).",
        ["out = run.stage_dir('singles')\nprint((out / 'summary.json').read_text())\n"
         "load_dataset_dir(out).to_pandas()[['task_id', 'label', 'origin', 'score']].head(12)"],
    ),
    "targets": (
        "SFT learns from one target per task: the best candidate by the preference signal (for `mi`, the max-MI "
        "passing solution).",
        ["out = run.stage_dir('targets')\nprint((out / 'summary.json').read_text())\n"
         "load_dataset_dir(out).to_pandas()[['task_id', 'origin', 'score']].head(12)"],
    ),
    "optimize-data": (
        "Training-data optimisation: every training task's reference solution through the steps of `data_opt.steps` "
        "in order (ref = autoflake, autopep8, docformatter, unify; cle = bandit, pylint errors, heuristics; sel = the "
        "top fraction by MI, pylint or a ranker; aug = verified rewrites; syn = a generator's first passing solution). "
        "Every solution is re-run in the sandbox; the report says what each step kept, changed, dropped and added.",
        ["import json\n\nprint(json.dumps(json.loads((run.stage_dir('optimize-data') / 'report.json').read_text()), "
         "indent=1)[:3000])\nload_dataset_dir(run.stage_dir('optimize-data')).to_pandas()"
         "[['task_id', 'origin', 'steps']].head(12)",
         SHOW_PNGS.format(folder="run.stage_dir('optimize-data')")],
    ),
    "optimize-candidates": (
        "Training-data optimisation of the candidate pool before pairing: the passing candidates of every task "
        "through `data_opt.steps`, each re-run and MI-scored, in the candidates' schema (failing candidates pass "
        "through unchanged).",
        ["import json\n\nprint(json.dumps(json.loads((run.stage_dir('optimize-candidates') / 'report.json')"
         ".read_text()), indent=1)[:3000])"],
    ),
    "pairs-optimized": (
        "Preference pairs labelled exactly as stage `pairs` does, from the optimised candidate pool.",
        ["print((run.stage_dir('pairs-optimized') / 'summary.json').read_text())"],
    ),
    "dpo-data": _training("dpo-data", "LoRA DPO (the `dpo` section) on the pairs of the optimised candidate pool."),
    "sft": _training("sft", "LoRA SFT (TRL's SFTTrainer) on the targets; the loss covers the solution, not the prompt."),
    "sft-dpo": _training("sft-dpo", "DPO continuing the SFT adapter. Its reference is the SFT model (a frozen copy "
                                    "of the SFT adapter), not the base model."),
    "kto": _training("kto", "LoRA KTO (TRL's KTOTrainer) on the labelled singles; the reference is the base model "
                            "(adapter disabled)."),
    "kto-sft": _training("kto-sft", "SFT continuing the KTO adapter on the targets: the compiler-feedback study's "
                                    "best arm."),
    "sft-data": _training("sft-data", "LoRA SFT on the optimised training set (stage `optimize-data`): the "
                                      "training-data-optimisation study's model."),
    "grpo": _training("grpo", "Online RL (TRL's GRPOTrainer): the policy samples several solutions per training "
                              "prompt, each is executed in the sandbox and rewarded for passing, for the share of tests "
                              "passed and for MI when it passes; the sandbox runs every group in one batch."),
})

STUDY_PARAMETERS = PARAMETERS.replace('configs/demo.yaml', 'configs/study-demo.yaml').replace(
    "# run_dir: None means runs/<run_name>", "# run_dir: None means runs/<run_name>; arms: None = every arm")
STUDY_RUN = SETUP.split("from common.config import", 1)[0] + """from common.study.config import load_study
from common.study.run import run_study

study = load_study(config_path, overrides)
run_dir = run_dir or f"runs/{study.shared_config().run_name}"
for arm in study.study.arms:
    print(f"{arm.name}: {arm.method} on {arm.signal}" + (" + stage 2" if arm.stage2 else ""))"""


def build_study() -> nbformat.NotebookNode:
    title = ("# Stage 3 · 03 `study`\n\nEvery arm of a study preset (a training method on a preference signal) "
             "trained from the same stage-1 candidates and evaluated with the same seeds, samples and benchmarks; "
             "one report with a row per arm. CLI twin: `python -m common study --config <preset>`.")
    parameters = new_code_cell(STUDY_PARAMETERS)
    parameters.metadata["tags"] = ["parameters"]
    cells = [new_markdown_cell(title), parameters, new_code_cell(STUDY_RUN),
             new_code_cell("report = run_study(study, run_dir, force=force)\n"
                           "display(Markdown((report / 'tables.md').read_text()))"),
             new_code_cell("import pandas as pd\n\npd.read_csv(report / 'summary.csv')"),
             new_code_cell(SHOW_PNGS.format(folder="report"))]
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


STUDY_NOTEBOOK = "3_evaluation/03_study.ipynb"
GROUP_TITLES = {"1_global_dataset_generation": "Stage 1", "2_fine_tuning_process": "Stage 2",
                "3_evaluation": "Stage 3"}


def build(stage) -> nbformat.NotebookNode:
    intro, cells = SHOW[stage.name]
    number = Path(stage.notebook).name.split("_", 1)[0]
    title = f"# {GROUP_TITLES[stage.group]} · {number} `{stage.name}`\n\n{stage.help[0].upper()}{stage.help[1:]}.\n\n"
    call = f'from common.pipeline.runner import run_stage\n\nrun_stage("{stage.name}", config, run_dir, force=force)'
    parameters = new_code_cell(PARAMETERS)
    parameters.metadata["tags"] = ["parameters"]
    notebook = new_notebook(cells=[new_markdown_cell(title + intro), parameters, new_code_cell(SETUP),
                                   new_code_cell(call), *[new_code_cell(source) for source in cells]])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def main() -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    from common.pipeline.registry import all_stages

    for stage in all_stages().values():
        target = ROOT / stage.notebook
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(build(stage), target)
        print(target.relative_to(ROOT))
    nbformat.write(build_study(), ROOT / STUDY_NOTEBOOK)
    print(STUDY_NOTEBOOK)


if __name__ == "__main__":
    main()
