"""Step ``ref``: rewrite every solution with four formatting tools, keeping a rewrite only if it still passes its tests.

The tools run in the study's order, each switched by ``data_opt``:

1. **autoflake** (``ref_autoflake``) removes unused imports (all of them, not only the standard library's: the
   study asks for unused imports gone) and unused variables. Library call: ``autoflake.fix_code``.
2. **autopep8** (aggressiveness ``ref_autopep8_aggressive``, the study: 2) fixes PEP 8 layout: indentation,
   spacing, blank lines, the final newline. Library call: ``autopep8.fix_code(code, options={"aggressive": n})``,
   which never reads a setup.cfg/tox.ini/pyproject.toml (``apply_config=False``). It keeps the code's line endings
   (MBPP's solutions use CRLF). config.py has no switch for autopep8 itself: it always runs unless a future
   ``ref_autopep8: false`` field is set (read if present).
3. **docformatter** (``ref_docformatter``) reformats docstrings (PEP 257: summary line, closing quotes, wrapping).
   Called as its **command line** on temporary files, because docformatter has no public library API: its only
   in-process entry point is the private ``Formatter._do_format_code``, which needs an argparse namespace that only
   its ``Configurater`` builds, and that class reads ``pyproject.toml``/``setup.cfg``/``tox.ini`` from the working
   directory. The CLI runs once per step over all solutions (``--in-place``, working directory = the temporary
   folder, so no project configuration leaks in) and each file is read back. Its exit code 3 means "some file was
   reformatted", NOT failure: the published pipeline treated it as an error and silently discarded every docstring
   fix. Exit 0 means nothing changed; any other code (a crash: one bad file ends the whole run) re-runs each half of
   the batch, and a file docformatter cannot handle alone keeps its input (reported in ``details["tool_errors"]``).
4. **unify** (``ref_unify``) makes string quotes single (``'``, unify's default, what ``unify --in-place`` writes)
   where that needs no escaping. Library call: ``unify.format_code``. Triple-quoted strings (docstrings) and
   upper-case prefixes (``R"..."``) are left alone by unify.

Then every rewritten solution is executed against its task's tests in ONE ``ctx.verify`` call (the sandbox runs
them in parallel; a call per row would pay its start-up per row). A rewrite that does not parse or fails a test
reverts to the original and is counted ``reverted``: autopep8 level 2 rewrites ``x == None`` / ``== True`` and
``type(a) == type(b)``, and autoflake drops an import whose side effect the code relies on, so formatters are not
trusted to preserve behaviour. A tool that raises on one solution leaves that solution as it was for that tool.

The rewritten code is written to the row's ``code``, the field every later step and the trainer read (the published
refactoring wrote a different field than training read, so its refactoring never reached the model).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

from common.dataopt.base import StepContext, StepResult, changed_row

TOOLS = ("autoflake", "autopep8", "docformatter", "unify")
UNIFY_QUOTE = "'"  # unify's own default
# docformatter's exit codes (docformatter.format.FormatResult): 0 nothing to change, 3 files were reformatted
_DOCFORMATTER_OK = (0, 3)
# Seconds docformatter may take on one batch (it formats ~1,000 MBPP-sized files a second).
_DOCFORMATTER_TIMEOUT = 600
_ERROR_EXAMPLES = 20  # task ids listed per tool in details["tool_errors"] (reverted rows are all listed)


def refactor_step(rows: list[dict[str, Any]], ctx: StepContext) -> StepResult:
    """Each row's code through the enabled tools; rewrites that parse and pass their tests replace the code.

    counts: ``kept`` (no tool changed the code), ``changed``, ``reverted`` (a rewrite that failed, original kept),
    ``dropped`` and ``added`` (always 0). details: ``tool_changes`` (rows each tool changed, before verification),
    ``tool_errors`` (task ids a tool raised on), ``reverted`` (task id and why), ``tools`` (versions used).
    """
    config = ctx.config
    tools = enabled_tools(config)
    originals = [str(row["code"]) for row in rows]
    codes, tool_changes, tool_errors = run_tools(originals, [row["task_id"] for row in rows], tools, config,
                                                 ctx.work)
    rewritten = [i for i, (new, old) in enumerate(zip(codes, originals)) if new != old]
    reverted: list[dict[str, Any]] = []
    unparsable = {i: why for i in rewritten if (why := parse_error(codes[i])) is not None}
    to_verify = [i for i in rewritten if i not in unparsable]
    verdicts = ctx.verify([{**rows[i], "code": codes[i]} for i in to_verify], desc="ref: verifying rewrites") \
        if to_verify else []
    failed = {i: f"{v['status']}: {v.get('detail', '')}"[:200] for i, v in zip(to_verify, verdicts)
              if not v["passed"]}
    out = []
    for i, row in enumerate(rows):
        why = unparsable.get(i) or failed.get(i)
        if why is not None:
            reverted.append({"task_id": row["task_id"], "reason": why})
        out.append(changed_row(row, codes[i], "ref") if codes[i] != originals[i] and why is None else dict(row))
    changed = len(rewritten) - len(reverted)
    counts = {"kept": len(rows) - len(rewritten), "changed": changed, "reverted": len(reverted), "dropped": 0,
              "added": 0}
    details = {"tool_changes": tool_changes, "tool_errors": tool_errors, "reverted": reverted,
               "tools": {name: _version(name) for name in tools}}
    ctx.log(f"ref: {changed} of {len(rows)} rows rewritten ({', '.join(f'{k} {v}' for k, v in tool_changes.items())})"
            f", {len(reverted)} rewrites reverted (failed their tests or did not parse)")
    return StepResult(rows=out, counts=counts, details=details)


def enabled_tools(config: Any) -> list[str]:
    """The tools the config switches on, in the study's order; checks autopep8's aggressiveness."""
    aggressive = config.ref_autopep8_aggressive
    if isinstance(aggressive, bool) or not isinstance(aggressive, int) or aggressive < 0:
        raise ValueError(f"data_opt.ref_autopep8_aggressive must be a non-negative integer (the study: 2), "
                         f"got {aggressive!r}")
    switches = {"autoflake": config.ref_autoflake, "autopep8": getattr(config, "ref_autopep8", True),
                "docformatter": config.ref_docformatter, "unify": config.ref_unify}
    return [name for name in TOOLS if switches[name]]


def run_tools(codes: Sequence[str], task_ids: Sequence[Any], tools: Sequence[str], config: Any,
              work: Path | None = None) -> tuple[list[str], dict[str, int], dict[str, list]]:
    """``codes`` through ``tools`` in order: the final codes, how many codes each tool changed, and the task ids of
    codes a tool raised on (that tool left them as they were)."""
    current = list(codes)
    changes: dict[str, int] = {}
    errors: dict[str, list] = {}
    for tool in tools:
        if tool == "docformatter":
            new, failed = docformatter_codes(current, work)
        else:
            new, failed = _per_code(_IN_PROCESS[tool](config), current)
        changes[tool] = sum(a != b for a, b in zip(new, current))
        if failed:
            errors[tool] = [task_ids[i] for i in failed][:_ERROR_EXAMPLES]
        current = new
    return current, changes, errors


def _autoflake(config: Any) -> Callable[[str], str]:
    import autoflake

    return lambda code: autoflake.fix_code(code, remove_all_unused_imports=True, remove_unused_variables=True)


def _autopep8(config: Any) -> Callable[[str], str]:
    import autopep8

    options = {"aggressive": int(config.ref_autopep8_aggressive)}
    return lambda code: autopep8.fix_code(code, options=dict(options))


def _unify(config: Any) -> Callable[[str], str]:
    import unify

    return lambda code: unify.format_code(code, preferred_quote=UNIFY_QUOTE)


_IN_PROCESS = {"autoflake": _autoflake, "autopep8": _autopep8, "unify": _unify}


def _per_code(fix: Callable[[str], str], codes: Sequence[str]) -> tuple[list[str], list[int]]:
    """``fix`` on each code; a code it raises on (formatters assert on odd token streams) stays as it was."""
    out, failed = [], []
    for index, code in enumerate(codes):
        try:
            new = fix(code)
        except Exception:  # noqa: BLE001 - any tool crash means "this tool cannot rewrite this code"
            new = None
        if not isinstance(new, str):
            failed.append(index)
            new = code
        out.append(new)
    return out, failed


def docformatter_codes(codes: Sequence[str], work: Path | None = None) -> tuple[list[str], list[int]]:
    """docformatter's CLI over all ``codes`` in one run (more only if it crashes; module docstring: why not its
    Python API); returns the formatted codes and the indices docformatter could not handle (left as they were)."""
    if not codes:
        return [], []
    if work is not None:
        Path(work).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ref-docformatter-", dir=work) as folder:
        paths = [os.path.join(folder, f"code_{i:06d}.py") for i in range(len(codes))]
        for path, code in zip(paths, codes):
            _write(path, code)
        failed: list[int] = []
        _format_in_halves(folder, paths, codes, list(range(len(codes))), failed)
        out = []
        for index, (path, code) in enumerate(zip(paths, codes)):
            new = _read(path)
            if new is None and index not in failed:
                failed.append(index)
            out.append(code if new is None else new)
        return out, sorted(failed)


def _format_in_halves(folder: str, paths: Sequence[str], codes: Sequence[str], indices: list[int],
                      failed: list[int]) -> None:
    """docformatter over the files ``indices``; when the run crashes (docformatter 1.7.8 raises on, e.g., a line of
    only a tab in MBPP task 829, ending the whole run), restore those files and retry each half, so k bad files cost
    about k*log2(n) runs rather than one run per file. A file that crashes alone keeps its input (``failed``)."""
    if _run_docformatter(folder, [paths[i] for i in indices])[0] in _DOCFORMATTER_OK:
        return
    for i in indices:  # files before the crash were already rewritten: start the halves from the inputs
        _write(paths[i], codes[i])
    if len(indices) == 1:
        failed.append(indices[0])
        return
    middle = len(indices) // 2
    _format_in_halves(folder, paths, codes, indices[:middle], failed)
    _format_in_halves(folder, paths, codes, indices[middle:], failed)


def _run_docformatter(folder: str, paths: Sequence[str]) -> tuple[int, str]:
    """One ``docformatter --in-place`` run; (exit code, stderr). Exit 3 = files were changed (docformatter's
    FormatResult.format_required), which is success here."""
    command = [sys.executable, "-m", "docformatter", "--in-place", *[os.path.basename(p) for p in paths]]
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=_DOCFORMATTER_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"ref: docformatter took over {_DOCFORMATTER_TIMEOUT} s on {len(paths)} files; set "
                           f"data_opt.ref_docformatter: false to skip it") from exc
    if done.returncode not in _DOCFORMATTER_OK and "No module named docformatter" in done.stderr:
        raise RuntimeError("ref: docformatter is not installed in this environment (pip install -r "
                           "requirements.txt), or set data_opt.ref_docformatter: false")
    return done.returncode, done.stderr


def _write(path: str, code: str) -> None:
    with open(path, "w", encoding="utf-8", errors="surrogatepass", newline="") as handle:
        handle.write(code)


def _read(path: str) -> str | None:
    """The file as docformatter left it; None if it is no longer UTF-8 (docformatter guesses each file's encoding
    and writes in the one it guessed)."""
    try:
        with open(path, encoding="utf-8", errors="surrogatepass", newline="") as handle:
            return handle.read()
    except UnicodeDecodeError:
        return None


def parse_error(code: str) -> str | None:
    """None when ``code`` parses as Python, else why not (one line)."""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return f"does not parse: {type(exc).__name__}: {exc}"[:200]
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
