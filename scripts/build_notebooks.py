"""Writes the eight stage notebooks (run: ``python scripts/build_notebooks.py``).

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


if __name__ == "__main__":
    main()
