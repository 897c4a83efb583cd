"""Writes the eight stage notebooks (run: ``python scripts/build_notebooks.py``).

Notebooks are thin on purpose: a papermill parameters cell, a call into ``common`` (the same function the CLI
calls), and cells that show what the stage produced. Generating them from this file keeps the eight consistent;
``tests/test_notebooks.py`` executes them all, in order, with the smoke config.
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
from common.pipeline.artifacts import RunDir, load_dataset_dir, read_manifest
from common.config import load_config

config = load_config(config_path, overrides)
run_dir = run_dir or f"runs/{config.run_name}"
run = RunDir(run_dir)
print(f"model {config.model.name}, data {config.data.source or 'MBPP_PATH/hub'}, run dir {run.root}")'''

SHOW_PNGS = '''for png in sorted(Path({folder}).glob("*.png")):
    print(png)
    display(Image(filename=str(png)))'''

NOTEBOOKS = {
    "1_global_dataset_generation/01_prepare_mbpp.ipynb": (
        "# Stage 1 · 01 Prepare MBPP\n\nMBPP *full* with the paper's splits: the training pool is the train split "
        "(task_id 601-974) minus tasks whose reference defines a class (372 tasks); evaluation is the test split "
        "(task_id 11-510, 500 tasks). The prompt is the task text plus the signature of the last `def` of the "
        "reference; the asserts are never shown to the model.",
        [
            "from common.stage1 import prepare_mbpp\n\nprepare_mbpp(config, run_dir, force=force)",
            "from common.candidates.generators import prompt_style_for\nfrom common.prompts import build_prompt\n\n"
            "train = load_dataset_dir(run.mbpp / 'train')\ntest = load_dataset_dir(run.mbpp / 'test')\n"
            "print(len(train), 'train tasks;', len(test), 'evaluation tasks')\n"
            "print(build_prompt(train[0], prompt_style_for(config.model), config.sampling.system_prompt))\n"
            "train.to_pandas()[['task_id', 'text']].head()",
        ],
    ),
    "1_global_dataset_generation/02_generate_candidates.ipynb": (
        "# Stage 1 · 02 Generate candidates\n\nA generator writes several functionally different solutions per "
        "train task (the paper: Gemini 2.5 Pro, two per task; here `stage1.generator` picks `api`, `local` or the "
        "LLM-free `rewrite`). Every candidate runs against the task's asserts in the sandbox and is scored by MI.",
        [
            "from common.stage1 import generate_candidates\n\ngenerate_candidates(config, run_dir, force=force)",
            "import json\n\nprint(json.dumps(read_manifest(run.candidates)['summary'], indent=2))\n"
            "load_dataset_dir(run.candidates).to_pandas()[['task_id', 'candidate_index', 'origin', 'status', 'mi']]"
            ".head(12)",
        ],
    ),
    "1_global_dataset_generation/03_label_pairs.ipynb": (
        "# Stage 1 · 03 Label pairs\n\nPairs where both solutions pass are labelled by radon's Maintainability "
        "Index: the higher-MI solution is *chosen*. Ties carry no preference and are dropped unless "
        "`stage1.keep_ties` (the paper preset) is set.",
        [
            "from common.stage1 import label_pairs\n\nlabel_pairs(config, run_dir, force=force)",
            "import json\n\nprint((run.pairs / 'summary.json').read_text())\npairs = load_dataset_dir(run.pairs)\n"
            "if len(pairs):\n    print('CHOSEN  (MI %.1f)\\n%s\\n' % (pairs[0]['chosen_mi'], pairs[0]['chosen']))\n"
            "    print('REJECTED (MI %.1f)\\n%s' % (pairs[0]['rejected_mi'], pairs[0]['rejected']))",
            SHOW_PNGS.format(folder="run.pairs"),
        ],
    ),
    "2_fine_tuning_process/01_dpo.ipynb": (
        "# Stage 2 · 01 DPO on the global dataset\n\nLoRA DPO (TRL) on the base model with the stage-1 pairs; the "
        "reference model is the base with the adapter disabled. The result is the `-dpo` adapter.",
        [
            "from common.training.dpo import run_dpo_stage\n\nrun_dpo_stage(config, run_dir, stage='dpo', force=force)",
            "import pandas as pd\n\npd.read_csv(run.dpo_adapter / 'training_log.csv').tail(10)",
            SHOW_PNGS.format(folder="run.dpo_adapter"),
        ],
    ),
    "2_fine_tuning_process/02_self_generation.ipynb": (
        "# Stage 2 · 02 Self-generation\n\nThe `-dpo` model samples its own solutions for every train prompt over "
        "several rounds, re-queuing prompts with fewer than two passing samples together with the last failed "
        "solution. The max-MI and min-MI passing samples of each task form a pair.",
        [
            "from common.preference.self_generation import run_self_generation\n\n"
            "run_self_generation(config, run_dir, force=force)",
            "import json\n\nprint((run.selfgen / 'rounds.json').read_text())\n"
            "print((run.selfgen_pairs / 'summary.json').read_text())",
            SHOW_PNGS.format(folder="run.selfgen_pairs"),
        ],
    ),
    "2_fine_tuning_process/03_dpo_further.ipynb": (
        "# Stage 2 · 03 Further DPO\n\nDPO again on the self-generated pairs, continuing the same adapter "
        "(loaded trainable). `dpo_further.stage2_reference` chooses the reference: the base model (`base`, the "
        "paper's intent) or a frozen copy of the stage-1 adapter (`stage1`). The result is `-dpo-further`.",
        [
            "from common.training.dpo import run_dpo_stage\n\n"
            "run_dpo_stage(config, run_dir, stage='dpo_further', force=force)",
            "import pandas as pd\n\npd.read_csv(run.dpo_further_adapter / 'training_log.csv').tail(10)",
            SHOW_PNGS.format(folder="run.dpo_further_adapter"),
        ],
    ),
    "3_evaluation/01_evaluate.ipynb": (
        "# Stage 3 · 01 Evaluate\n\nbaseline, `-dpo` and `-dpo-further` sample n solutions per test task "
        "(paper: 500 tasks, n=10, T=0.6, top_p=0.9) for several independent runs; every sample is executed in the "
        "sandbox and scored by MI, and kept on disk.",
        ["from common.evaluation.sampling import run_evaluation\n\nrun_evaluation(config, run_dir, force=force)"],
    ),
    "3_evaluation/02_tables_and_figures.ipynb": (
        "# Stage 3 · 02 Tables and figures\n\npass@k and the average MI of passing solutions per variant, as mean "
        "± sample std over runs, the change against the baseline with a paired test, and the paper's numbers "
        "side by side when supplied.",
        [
            "from common.evaluation.report.build import run_report\n\nreport_dir = run_report(config, run_dir, force=force)",
            "display(Markdown((run.report / 'tables.md').read_text()))",
            SHOW_PNGS.format(folder="run.report"),
        ],
    ),
}


def build(path: str, intro: str, cells: list[str]) -> nbformat.NotebookNode:
    parameters = new_code_cell(PARAMETERS)
    parameters.metadata["tags"] = ["parameters"]
    notebook = new_notebook(cells=[new_markdown_cell(intro), parameters, new_code_cell(SETUP),
                                   *[new_code_cell(source) for source in cells]])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def main() -> None:
    for path, (intro, cells) in NOTEBOOKS.items():
        target = ROOT / path
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(build(path, intro, cells), target)
        print(target.relative_to(ROOT))


if __name__ == "__main__":
    main()
