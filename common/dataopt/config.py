"""Settings of the data-optimisation steps (section ``data_opt`` of a preset). Flat, with each step's fields
prefixed by its name, so every field is one dotted path (``data_opt.sel_fraction``) like the rest of the config."""

from __future__ import annotations

from dataclasses import dataclass

from common.config_fields import _f


@dataclass
class DataOptConfig:
    steps: list[str] = _f(help="Steps applied in order: ref, cle, sel, aug, syn (e.g. [syn, ref]).", factory=list)
    # ref: refactoring
    ref_autoflake: bool = _f(True, "ref: remove unused imports and variables (autoflake).")
    ref_autopep8_aggressive: int = _f(2, "ref: autopep8 aggressiveness (the study: 2).")
    ref_docformatter: bool = _f(True, "ref: format docstrings (docformatter; exit code 3 means 'changed').")
    ref_unify: bool = _f(True, "ref: unify string quotes (unify).")
    # cle: cleaning
    cle_bandit: bool = _f(True, "cle: drop solutions with bandit security findings (offline).")
    cle_bandit_min_severity: str = _f("medium", "cle: lowest bandit severity that drops a solution: low, medium, high.")
    cle_pylint_errors: bool = _f(True, "cle: drop solutions with pylint error-category (E) messages.")
    cle_rule_file: str | None = _f(None, "cle: a local semgrep rule file (semgrep must be installed); None = skip. "
                                         "The study's registry packs need the network.")
    cle_min_code_lines: int = _f(1, "cle: drop solutions shorter than this many non-blank lines.")
    cle_max_code_lines: int = _f(200, "cle: drop solutions longer than this many non-blank lines.")
    cle_max_docstring_chars: int = _f(2000, "cle: drop solutions whose docstrings are longer than this.")
    cle_drop_todo: bool = _f(True, "cle: drop solutions mentioning TODO / FIXME.")
    cle_max_parameters: int = _f(8, "cle: drop solutions with a function taking more parameters than this.")
    cle_max_nesting: int = _f(6, "cle: drop solutions nested deeper than this (blocks inside blocks).")
    cle_max_repeated_lines: int = _f(3, "cle: drop solutions repeating one non-trivial line more often than this.")
    # sel: selection
    sel_fraction: float = _f(0.2, "sel: share of rows kept (the study: the top 20 %).")
    sel_score: str = _f("mi", "sel: quality score: mi, pylint, or ranker (the model in sel_ranker_model).")
    sel_ranker_model: str | None = _f(None, "sel: local path or hub id of a ranker model (the study: SCAR's).")
    # aug: augmentation
    aug_variants_per_task: int = _f(2, "aug: semantics-preserving rewrites added per task (originals kept).")
    aug_seed: int = _f(0, "aug: seed of the rewrite engine.")
    # syn: synthesis
    syn_generator: str = _f("local", "syn: who writes new solutions: 'local' (the policy model, or generator_model) "
                                     "or 'api' (stage1_sampling's endpoint).")
    syn_tries: int = _f(5, "syn: solutions tried per task; the first that passes every test replaces the original.")
