"""Step ``cle``: drop solutions that are insecure, erroneous, or poor training examples by simple measures.

Checks, each switched or tuned by ``data_opt``; every row goes through all of them, so a row can have several
reasons. The first reason (in this order) is the one its drop is counted under; details list all of them:

* ``syntax_error``: the code does not parse (no other check can judge it; pylint also reports it as E0001).
* ``bandit`` (``cle_bandit``, ``cle_bandit_min_severity``): a bandit finding of at least that severity, at any
  confidence. Library call: one ``bandit.core.manager.BanditManager`` over all solutions written as files (bandit's
  plugins load once per step, not per solution). ``# nosec`` comments are ignored: a training example must not
  teach the model to silence its security checks.
* ``pylint_error`` (``cle_pylint_errors``): a pylint error-category (E) message, pylint's default configuration
  pinned by an empty rcfile (no project pylintrc leaks in), ``--disable=all --enable=E``. One in-process pylint run
  per chunk of files, as in ``common.signals.pylint_score`` (pylint's set-up costs more than linting one solution);
  if pylint crashes on a chunk, its files are linted one by one and a file that still crashes is not dropped
  (``details["pylint_crashed"]``).
* heuristics: ``too_short`` / ``too_long`` (non-blank lines outside ``cle_min_code_lines`` ..
  ``cle_max_code_lines``), ``long_docstring`` (a module/class/function docstring over ``cle_max_docstring_chars``),
  ``todo`` (``cle_drop_todo``: the words TODO or FIXME, upper case, anywhere), ``too_many_parameters`` (a function or
  lambda with more than ``cle_max_parameters`` parameters, ``self``, ``*args`` and ``**kwargs`` included),
  ``deep_nesting`` (compound statements, ``def`` and ``class`` included, nested more than ``cle_max_nesting`` deep;
  an ``elif`` does not nest), ``repeated_lines`` (one non-trivial line, see :func:`repeated_line_count`, occurring
  more than ``cle_max_repeated_lines`` times).
* ``semgrep`` (``cle_rule_file``): a finding of a local semgrep rule file, one ``semgrep scan`` over all files. The
  CLI is the only way to run semgrep (it has no Python API); it must be installed when the field is set.

Cleaning never changes code, so nothing is re-verified. Nothing is dropped silently: ``details["task_ids"]`` lists,
per reason, the task ids of every row flagged with it, and ``details["dropped"]`` each dropped row with all its
reasons and the findings behind them (bandit test ids, pylint symbols, semgrep rule ids).
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from common.dataopt.base import StepContext, StepResult

REASONS = ("syntax_error", "bandit", "pylint_error", "too_short", "too_long", "long_docstring", "todo",
           "too_many_parameters", "deep_nesting", "repeated_lines", "semgrep")
SEVERITIES = ("low", "medium", "high")
_TODO = re.compile(r"\b(TODO|FIXME)\b")
# return/break/... alone or with one name or literal, and counter updates such as ``current += 1``
_TRIVIAL_STATEMENT = re.compile(r"(return|break|continue|pass|raise)(\s+[\w.'\"-]+)?;?|[\w.]+\s*[-+*/]=\s*[\w.]+;?")
_PYLINT_CHUNK = 256  # files per pylint run: set-up paid once per chunk, a crash costs one chunk a file-by-file retry
_SEMGREP_TIMEOUT = 1800
_NESTING = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try, ast.FunctionDef,
            ast.AsyncFunctionDef, ast.ClassDef, *((ast.Match, ast.TryStar) if sys.version_info >= (3, 11) else ()))


def clean_step(rows: list[dict[str, Any]], ctx: StepContext) -> StepResult:
    """The rows no check flags, in input order. counts: kept, dropped (changed, reverted, added: 0). details:
    ``dropped_by`` (drops per first reason, sums to ``dropped``), ``flagged`` (rows per reason, all reasons),
    ``task_ids`` (per reason), ``dropped`` (index, task_id, reasons, findings of each dropped row)."""
    config = ctx.config
    check_config(config)
    findings = row_findings([str(row["code"]) for row in rows], config, ctx.work)
    kept, dropped = [], []
    for index, (row, found) in enumerate(zip(rows, findings)):
        if not found:
            kept.append(dict(row))
            continue
        reasons = [reason for reason in REASONS if reason in found]
        dropped.append({"index": index, "task_id": row["task_id"], "reasons": reasons,
                        "findings": {reason: found[reason] for reason in reasons}})
    flagged = Counter(reason for entry in dropped for reason in entry["reasons"])
    details = {
        "dropped_by": dict(Counter(entry["reasons"][0] for entry in dropped)),
        "flagged": {reason: flagged[reason] for reason in REASONS if flagged[reason]},
        "task_ids": {reason: [e["task_id"] for e in dropped if reason in e["reasons"]]
                     for reason in REASONS if flagged[reason]},
        "dropped": dropped,
    }
    ctx.log(f"cle: kept {len(kept)} of {len(rows)} rows; dropped by "
            f"{', '.join(f'{k} {v}' for k, v in details['dropped_by'].items()) or 'nothing'}")
    counts = {"kept": len(kept), "dropped": len(dropped), "changed": 0, "reverted": 0, "added": 0}
    return StepResult(rows=kept, counts=counts, details=details)


def check_config(config: Any) -> None:
    """Errors that name the faulty ``data_opt`` field, raised before any work is done."""
    if config.cle_bandit and str(config.cle_bandit_min_severity).lower() not in SEVERITIES:
        raise ValueError(f"data_opt.cle_bandit_min_severity must be one of {SEVERITIES}, "
                         f"got {config.cle_bandit_min_severity!r}")
    for name in ("cle_min_code_lines", "cle_max_code_lines", "cle_max_docstring_chars", "cle_max_parameters",
                 "cle_max_nesting", "cle_max_repeated_lines"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"data_opt.{name} must be a non-negative integer, got {value!r}")
    if config.cle_min_code_lines > config.cle_max_code_lines:
        raise ValueError(f"data_opt.cle_min_code_lines ({config.cle_min_code_lines}) exceeds "
                         f"data_opt.cle_max_code_lines ({config.cle_max_code_lines}): every row would be dropped")
    if config.cle_rule_file:
        if not Path(config.cle_rule_file).is_file():
            raise FileNotFoundError(f"data_opt.cle_rule_file: no such semgrep rule file {config.cle_rule_file!r}")
        if semgrep_executable() is None:
            raise RuntimeError(f"data_opt.cle_rule_file is set ({config.cle_rule_file}) but semgrep is not "
                               "installed: pip install semgrep, or set data_opt.cle_rule_file: null")


def row_findings(codes: Sequence[str], config: Any, work: Path | None = None) -> list[dict[str, list]]:
    """Per code, reason -> what was found (empty dict: clean). Each distinct code is checked once."""
    unique = list(dict.fromkeys(codes))
    found: list[dict[str, list]] = [heuristic_findings(code, config) for code in unique]
    tools = [name for name, on in (("bandit", config.cle_bandit), ("pylint_error", config.cle_pylint_errors),
                                   ("semgrep", bool(config.cle_rule_file))) if on]
    if tools and unique:
        if work is not None:
            Path(work).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="cle-", dir=work) as folder:
            paths = _write_files(unique, folder)
            if "bandit" in tools:
                _merge(found, "bandit", bandit_findings(paths, str(config.cle_bandit_min_severity)))
            if "pylint_error" in tools:
                _merge(found, "pylint_error", pylint_error_findings(paths, folder))
            if "semgrep" in tools:
                _merge(found, "semgrep", semgrep_findings(paths, folder, str(config.cle_rule_file)))
    by_code = dict(zip(unique, found))
    return [by_code[code] for code in codes]


def _merge(found: list[dict[str, list]], reason: str, per_file: Sequence[list]) -> None:
    for entry, messages in zip(found, per_file):
        if messages:
            entry[reason] = messages


def _write_files(codes: Sequence[str], folder: str) -> list[str]:
    """One file per code, ``snippet_<sha1>.py``: a valid module name no solution imports by accident."""
    paths = []
    for code in codes:
        path = os.path.join(folder, f"snippet_{hashlib.sha1(code.encode('utf-8', 'surrogatepass')).hexdigest()}.py")
        with open(path, "w", encoding="utf-8", errors="surrogatepass", newline="") as handle:
            handle.write(code)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------------- heuristics

def heuristic_findings(code: str, config: Any) -> dict[str, list]:
    """reason -> a one-line description, for the syntax check and every heuristic that flags ``code``."""
    found: dict[str, list] = {}
    lines = [line for line in code.splitlines() if line.strip()]
    if len(lines) < config.cle_min_code_lines:
        found["too_short"] = [f"{len(lines)} non-blank lines < {config.cle_min_code_lines}"]
    if len(lines) > config.cle_max_code_lines:
        found["too_long"] = [f"{len(lines)} non-blank lines > {config.cle_max_code_lines}"]
    if config.cle_drop_todo and (match := _TODO.search(code)):
        found["todo"] = [f"mentions {match.group(1)}"]
    line, count = repeated_line_count(code)
    if count > config.cle_max_repeated_lines:
        found["repeated_lines"] = [f"{line!r} {count} times > {config.cle_max_repeated_lines}"]
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        found["syntax_error"] = [f"{type(exc).__name__}: {exc}"[:200]]
        return found
    longest = max((len(doc) for doc in _docstrings(tree)), default=0)
    if longest > config.cle_max_docstring_chars:
        found["long_docstring"] = [f"docstring of {longest} chars > {config.cle_max_docstring_chars}"]
    params = max_parameters(tree)
    if params > config.cle_max_parameters:
        found["too_many_parameters"] = [f"{params} parameters > {config.cle_max_parameters}"]
    depth = nesting_depth(tree)
    if depth > config.cle_max_nesting:
        found["deep_nesting"] = [f"nesting depth {depth} > {config.cle_max_nesting}"]
    return found


def _docstrings(tree: ast.AST) -> list[str]:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                  ast.ClassDef)))]
    return [doc for node in nodes if (doc := ast.get_docstring(node, clean=False)) is not None]


def max_parameters(tree: ast.AST) -> int:
    """The most parameters any function or lambda in ``tree`` takes (``self``, ``*args``, ``**kwargs`` count)."""
    counts = [len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
              for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
              for a in [node.args]]
    return max(counts, default=0)


def nesting_depth(tree: ast.AST) -> int:
    """How deep compound statements nest: ``def f(): for ...: if ...:`` is 3. An ``if`` that is the only statement
    of another ``if``'s else branch (an ``elif``) stays at its parent's depth, so an if/elif chain is not "deep"."""
    def depth(node: ast.AST, level: int, is_elif: bool = False) -> int:
        here = level + (isinstance(node, _NESTING) and not is_elif)
        deepest = here
        elif_child = node.orelse[0] if isinstance(node, ast.If) and len(node.orelse) == 1 \
            and isinstance(node.orelse[0], ast.If) else None
        for child in ast.iter_child_nodes(node):
            deepest = max(deepest, depth(child, here, child is elif_child))
        return deepest

    try:
        return depth(tree, 0)
    except RecursionError:  # nested past Python's own limit: as deep as it gets
        return sys.getrecursionlimit()


def repeated_line_count(code: str) -> tuple[str, int]:
    """The most frequent non-trivial stripped line and how often it occurs. Trivial lines, which repeat in any good
    code, are not counted: comments, lines under 8 characters (``else:``, ``pass``, ``i += 1``, brackets) and bare
    ``return``/``break``/``continue``/``pass``/``raise`` statements, alone or with one name or literal
    (``return False``, ``return result``), and counter updates (``current += 1``, ``n -= step``)."""
    counter = Counter(line.strip() for line in code.splitlines() if _non_trivial(line.strip()))
    return counter.most_common(1)[0] if counter else ("", 0)


def _non_trivial(line: str) -> bool:
    return len(line) >= 8 and not line.startswith("#") and not _TRIVIAL_STATEMENT.fullmatch(line)


# --------------------------------------------------------------------------------------------------------- tools

def bandit_findings(paths: Sequence[str], min_severity: str) -> list[list[str]]:
    """Per file, bandit's findings at or above ``min_severity`` (any confidence): ``"B602 HIGH line 3: ..."``.
    One BanditManager over all files; files bandit cannot parse are left to the syntax check."""
    from bandit.core import config as b_config
    from bandit.core import constants, manager

    logger = logging.getLogger("bandit")
    level = logger.level
    logger.setLevel(logging.WARNING)  # at INFO bandit draws a progress bar over more than 50 files
    try:
        mgr = manager.BanditManager(b_config.BanditConfig(), "file", quiet=True, ignore_nosec=True)
        mgr.discover_files(list(paths))
        mgr.run_tests()
        issues = mgr.get_issue_list(sev_level=constants.RANKING[SEVERITIES.index(min_severity.lower()) + 1],
                                    conf_level=constants.LOW)
    finally:
        logger.setLevel(level)
    by_file: dict[str, list[str]] = {}
    for issue in issues:
        by_file.setdefault(os.path.basename(issue.fname), []).append(
            f"{issue.test_id} {issue.severity} line {issue.lineno}: {issue.text}"[:200])
    return [by_file.get(os.path.basename(path), []) for path in paths]


def pylint_error_findings(paths: Sequence[str], folder: str) -> list[list[str]]:
    """Per file, pylint's error-category messages: ``"E0602 undefined-variable line 3: ..."``."""
    rcfile = os.path.join(folder, "empty.pylintrc")
    Path(rcfile).touch()
    out: list[list[str]] = []
    for start in range(0, len(paths), _PYLINT_CHUNK):
        out.extend(_pylint_chunk(rcfile, paths[start: start + _PYLINT_CHUNK]))
    return out


def _pylint_chunk(rcfile: str, paths: Sequence[str]) -> list[list[str]]:
    from pylint.lint import Run
    from pylint.reporters import CollectingReporter

    try:
        run = Run([f"--rcfile={rcfile}", "--persistent=n", "--reports=n", "--score=n", "--disable=all",
                   "--enable=E", *paths], reporter=CollectingReporter(), exit=False)
    except Exception:  # noqa: BLE001 - astroid crashes on a few pathological inputs (RecursionError, ...)
        if len(paths) == 1:
            logging.getLogger(__name__).warning("pylint crashed on %s; not dropping it", paths[0])
            return [[]]
        return [found for path in paths for found in _pylint_chunk(rcfile, [path])]
    by_file: dict[str, list[str]] = {}
    for msg in run.linter.reporter.messages:
        if msg.category == "error":
            by_file.setdefault(os.path.basename(msg.path), []).append(
                f"{msg.msg_id} {msg.symbol} line {msg.line}: {msg.msg}"[:200])
    return [by_file.get(os.path.basename(path), []) for path in paths]


def semgrep_executable() -> str | None:
    """semgrep next to this interpreter (a virtual environment need not be on PATH), else on PATH."""
    beside = Path(sys.executable).parent / "semgrep"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else shutil.which("semgrep")


def semgrep_findings(paths: Sequence[str], folder: str, rule_file: str) -> list[list[str]]:
    """Per file, the rule ids of ``rule_file`` that match it, from one ``semgrep scan --json`` over ``folder``."""
    executable = semgrep_executable()
    if executable is None:
        raise RuntimeError(f"data_opt.cle_rule_file is set ({rule_file}) but semgrep is not installed: "
                           "pip install semgrep, or set data_opt.cle_rule_file: null")
    command = [executable, "scan", "--config", str(Path(rule_file).resolve()), "--json", "--metrics=off",
               "--disable-version-check", "--no-git-ignore", "--quiet", "."]
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=_SEMGREP_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"cle: semgrep ran over {_SEMGREP_TIMEOUT} s with data_opt.cle_rule_file="
                           f"{rule_file}") from exc
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        report = None
    if done.returncode not in (0, 1) or not isinstance(report, Mapping):
        raise RuntimeError(f"cle: semgrep failed (exit {done.returncode}) with data_opt.cle_rule_file={rule_file}: "
                           f"{(done.stderr or done.stdout).strip()[-500:]}")
    by_file: dict[str, list[str]] = {}
    for result in report.get("results", []):
        by_file.setdefault(os.path.basename(str(result.get("path", ""))), []).append(
            f"{result.get('check_id')} line {result.get('start', {}).get('line')}")
    return [by_file.get(os.path.basename(path), []) for path in paths]
