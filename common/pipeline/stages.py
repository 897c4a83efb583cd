"""Every stage of mi-align, declared once. This is where a stage is declared.

Each declaration names the function that does the work (``module:function``, called with a
:class:`~common.pipeline.runner.StageContext`), the artifacts it reads (``inputs``: role -> producing stage), and
the config fields it reads (``reads``). The runner gives the function only those fields, and the fingerprint of its
artifact is made of exactly those fields plus its inputs' fingerprints (``common/pipeline/registry.py``). The CLI
subcommands, the notebooks (``scripts/build_notebooks.py``), the order of ``run``, the evaluation variants and the
artifact folders (``runs/<run>/<group>/<name>/``) are all derived from this list. ``docs/design.md`` draws the graph.

Adding a stage means one declaration here plus one function in the module of its concern. A new recipe made of
declared stages is a YAML list (``recipe:`` in a preset).

Why some reads are fields rather than whole sections:

* ``pairs`` reads ``sampling.system_prompt`` (it is written into every pair's prompt) but no other sampling field, so
  changing the evaluation's temperature keeps the pairs and the adapters trained on them.
* ``candidates`` and ``pairs`` read different fields of ``stage1``: the generator's settings make candidates, and
  the labelling rule (margin, ties, pairing) makes pairs from the same candidates.
* ``prepare`` freezes the *training* split only. ``evaluate`` loads its own evaluation split, so resizing the
  evaluation (``data.max_eval_tasks``) re-runs stage 3 alone.
"""

from __future__ import annotations

from common.pipeline.registry import Stage, declare

GEN, FT, EVAL = "1_global_dataset_generation", "2_fine_tuning_process", "3_evaluation"

# The labelling rule: chosen = higher MI; a margin and the tie rule decide which pairs are kept (common.preference).
PAIRING_RULE = ("stage1.min_mi_margin", "stage1.keep_ties")
# What makes one candidate better (common/preference/signals.py): read by every stage that labels candidates.
SIGNAL = ("stage1.signal", "stage1.compile_negatives", "stage1.corruption_seed")

PREPARE = declare(Stage(
    name="prepare", group=GEN, function="common.tasks.stage:prepare_tasks",
    notebook=f"{GEN}/01_prepare.ipynb", produces="tasks",
    help="stage 1: freeze the MBPP training tasks of the paper's split (372 tasks) into the run dir",
    reads=("data.source", "data.train_split", "data.max_train_tasks"),
))

CANDIDATES = declare(Stage(
    name="candidates", group=GEN, function="common.candidates.stage:generate_candidates",
    notebook=f"{GEN}/02_candidates.ipynb", produces="candidates", aliases=("generate-candidates",),
    help="stage 1a: candidate solutions per training task (api / local / rewrite generator), executed and MI-scored",
    inputs={"tasks": "prepare"},
    # `model`: the `local` generator samples from `generator_model`, or from the policy model when that is unset.
    reads=("stage1.generator", "stage1.num_candidates", "stage1.max_variants", "stage1.rewrite_seed",
           "stage1.mutants", "stage1.api_prompt", "stage1_sampling", "generator_model", "model", "sandbox"),
))

PAIRS = declare(Stage(
    name="pairs", group=GEN, function="common.preference.stage:label_pairs",
    notebook=f"{GEN}/03_pairs.ipynb", produces="pairs", aliases=("label-pairs",),
    help="stage 1b: preference pairs labelled by stage1.signal (the paper: MI among passing candidates)",
    inputs={"tasks": "prepare", "candidates": "candidates"},
    # `model`: the prompt style (chat or completion) comes from the model the pairs will train.
    reads=("stage1.pairing", *PAIRING_RULE, *SIGNAL, "sampling.system_prompt", "model"),
))

SINGLES = declare(Stage(
    name="singles", group=GEN, function="common.preference.stage:label_singles",
    notebook=f"{GEN}/04_singles.ipynb", produces="examples",
    help="KTO data: every candidate labelled desirable or undesirable by stage1.signal",
    inputs={"tasks": "prepare", "candidates": "candidates"},
    reads=(*SIGNAL, "sampling.system_prompt", "model"),
))

TARGETS = declare(Stage(
    name="targets", group=GEN, function="common.preference.stage:select_targets",
    notebook=f"{GEN}/05_targets.ipynb", produces="examples",
    help="SFT data: the best candidate of each task by stage1.signal",
    inputs={"tasks": "prepare", "candidates": "candidates"},
    reads=(*SIGNAL, "sampling.system_prompt", "model"),
))

DPO = declare(Stage(
    name="dpo", group=FT, function="common.training.stage:train_adapter",
    notebook=f"{FT}/01_dpo.ipynb", produces="adapter",
    help="stage 1c: LoRA DPO on the stage-1 pairs -> the -dpo adapter",
    inputs={"pairs": "pairs"},
    reads=("model", "dpo"),
    params={"method": "dpo", "section": "dpo", "data": "pairs"},
))

SELF_GENERATION = declare(Stage(
    name="self-generation", group=FT, function="common.preference.self_generation:run_self_generation",
    notebook=f"{FT}/02_self-generation.ipynb", produces="pairs", aliases=("self-generate",),
    help="stage 2a: the -dpo model samples its own solutions -> self-generated pairs",
    inputs={"tasks": "prepare", "policy": "dpo"},
    reads=("model", "sampling", "self_generation", "sandbox", *PAIRING_RULE),
))

DPO_FURTHER = declare(Stage(
    name="dpo-further", group=FT, function="common.training.stage:train_adapter",
    notebook=f"{FT}/03_dpo-further.ipynb", produces="adapter",
    help="stage 2c: continue the -dpo adapter on the self-generated pairs -> -dpo-further",
    inputs={"pairs": "self-generation", "init_adapter": "dpo"},
    reads=("model", "dpo_further"),
    params={"method": "dpo", "section": "dpo_further", "data": "pairs"},
))

OPTIMIZE_DATA = declare(Stage(
    name="optimize-data", group=GEN, function="common.dataopt.stage:optimize_data",
    notebook=f"{GEN}/06_optimize-data.ipynb", produces="examples",
    help="training-data optimisation: the references through data_opt.steps (ref, cle, sel, aug, syn), verified",
    inputs={"tasks": "prepare"},
    # `model`, `generator_model`, `stage1_sampling`: the generator of the syn step
    reads=("data_opt", "sandbox", "model", "generator_model", "stage1_sampling", "sampling.system_prompt"),
))

OPTIMIZE_CANDIDATES = declare(Stage(
    name="optimize-candidates", group=GEN, function="common.dataopt.stage:optimize_candidates",
    notebook=f"{GEN}/07_optimize-candidates.ipynb", produces="candidates",
    help="training-data optimisation of the candidate pool before pairing: passing candidates through data_opt.steps",
    inputs={"tasks": "prepare", "candidates": "candidates"},
    reads=("data_opt", "sandbox", "model", "generator_model", "stage1_sampling"),
))

PAIRS_OPTIMIZED = declare(Stage(
    name="pairs-optimized", group=GEN, function="common.preference.stage:label_pairs",
    notebook=f"{GEN}/08_pairs-optimized.ipynb", produces="pairs",
    help="preference pairs, as stage pairs, from the optimised candidate pool",
    inputs={"tasks": "prepare", "candidates": "optimize-candidates"},
    reads=("stage1.pairing", *PAIRING_RULE, *SIGNAL, "sampling.system_prompt", "model"),
))

# Methods beyond the paper's (docs/training.md). A continued adapter (init_adapter) is trained further; `reference`
# fixes what a preference loss compares against: "stage1" = a frozen copy of the continued adapter.
SFT = declare(Stage(
    name="sft", group=FT, function="common.training.stage:train_adapter",
    notebook=f"{FT}/04_sft.ipynb", produces="adapter",
    help="SFT (LoRA) on the targets: loss on the solution only",
    inputs={"targets": "targets"},
    reads=("model", "sft"),
    params={"method": "sft", "section": "sft", "data": "targets"},
))

SFT_DPO = declare(Stage(
    name="sft-dpo", group=FT, function="common.training.stage:train_adapter",
    notebook=f"{FT}/05_sft-dpo.ipynb", produces="adapter",
    help="DPO continuing the sft adapter; its reference is the SFT model (not the base)",
    inputs={"pairs": "pairs", "init_adapter": "sft"},
    reads=("model", "sft_dpo"),
    params={"method": "dpo", "section": "sft_dpo", "data": "pairs", "reference": "stage1"},
))

KTO = declare(Stage(
    name="kto", group=FT, function="common.training.stage:train_adapter",
    notebook=f"{FT}/06_kto.ipynb", produces="adapter",
    help="KTO (LoRA) on the labelled singles; reference = the base model",
    inputs={"singles": "singles"},
    reads=("model", "kto"),
    params={"method": "kto", "section": "kto", "data": "singles"},
))

KTO_SFT = declare(Stage(
    name="kto-sft", group=FT, function="common.training.stage:train_adapter",
    notebook=f"{FT}/07_kto-sft.ipynb", produces="adapter",
    help="SFT continuing the kto adapter on the targets (the compiler-feedback study's best arm)",
    inputs={"targets": "targets", "init_adapter": "kto"},
    reads=("model", "kto_sft"),
    params={"method": "sft", "section": "kto_sft", "data": "targets"},
))

SFT_DATA = declare(Stage(
    name="sft-data", group=FT, function="common.training.stage:train_adapter",
    notebook=f"{FT}/09_sft-data.ipynb", produces="adapter",
    help="SFT (LoRA) on the optimised training set of optimize-data (the data-optimisation study)",
    inputs={"targets": "optimize-data"},
    reads=("model", "sft"),
    params={"method": "sft", "section": "sft", "data": "targets"},
))

DPO_DATA = declare(Stage(
    name="dpo-data", group=FT, function="common.training.stage:train_adapter",
    notebook=f"{FT}/10_dpo-data.ipynb", produces="adapter",
    help="LoRA DPO on the pairs of the optimised candidate pool (the dpo section's settings)",
    inputs={"pairs": "pairs-optimized"},
    reads=("model", "dpo"),
    params={"method": "dpo", "section": "dpo", "data": "pairs"},
))

GRPO = declare(Stage(
    name="grpo", group=FT, function="common.training.stage:train_adapter",
    notebook=f"{FT}/08_grpo.ipynb", produces="adapter",
    help="online RL (GRPO): the policy samples, the sandbox and MI reward; no stage-1 candidates needed",
    inputs={"tasks": "prepare"},
    reads=("model", "grpo", "sandbox", "sampling.system_prompt"),
    params={"method": "grpo", "section": "grpo", "data": "tasks"},
))

EVALUATE = declare(Stage(
    name="evaluate", group=EVAL, function="common.evaluation.sampling:run_evaluation",
    notebook=f"{EVAL}/01_evaluate.ipynb", produces="samples",
    help="stage 3: sample, execute and MI-score every variant on the evaluation split, for several seeded runs",
    reads=("data.source", "data.eval_split", "data.max_eval_tasks", "model", "sampling", "sandbox"),
    # Which units exist, not what each holds: 3 -> 5 runs keeps the 3 finished ones. `evaluation.k` only picks the
    # pass@k printed per run; `recipe` decides the default variants.
    selects=("evaluation.variants", "evaluation.runs", "evaluation.k", "evaluation.benchmarks", "recipe"),
    evaluates_adapters=True,
))

REPORT = declare(Stage(
    name="report", group=EVAL, function="common.evaluation.report.build:run_report",
    notebook=f"{EVAL}/02_report.ipynb", produces="report",
    help="stage 3: tables (mean ± std over runs, change against the baseline, the paper's numbers) and figures",
    inputs={"samples": "evaluate"},
    reads=("evaluation", "model.name", "sampling.temperature", "sampling.top_p", "sampling.max_new_tokens",
           "sampling.num_samples", "sampling.seed", "recipe"),
))
