"""Split a test into the part the judge runs and the sub-expressions the candidate's process must evaluate.

Why: a judge the candidate cannot reach must hold the expected values. ``assert f([3, 1]) == [1, 3]`` becomes a
judge program ``assert (yield probe 0) == [1, 3]`` run in the executor, and a probe ``f([3, 1])`` evaluated in
the candidate's process, whose value comes back as plain data (``_wire``). Expected values therefore never
enter the candidate's process (unless a value cannot be shipped; see ``NeedsCandidate`` in ``_judge``).

Names in a test resolve like this:

* names the test (or its ``imports``) binds, the check function's locals and parameters, builtins and
  standard-library module names belong to the judge (a builtin shadowed by the program counts as the
  program's only when listed in ``entry_points``, or - without entry points - when the program binds it at
  top level: MBPP task 126 tests its own ``sum``);
* everything else (the functions under test, names bound by ``setup``, the check function's ``candidate``
  parameter) belongs to the program and is evaluated in the candidate's process.

A probe is a maximal "program side" sub-expression: a program name, or a call, attribute or subscript on one
(``f(x)``, ``Pair(1, 2).first``, ``obj.method(y)[0]``), or a lambda/comprehension mentioning one. Inside a
probe, sub-expressions made only of judge-bound names (``copy.deepcopy(coeffs)`` in a check function) are
evaluated by the judge and passed in as values ("bindings"); a probe without bindings is static and is sent to
the candidate with the job, so a straight MBPP test costs no round trip.

Units (what ``tests_passed`` counts): each string of an assert list; in a check function, each top-level
statement that asserts something about the program (a loop of asserts is one unit). A failing unit does not
stop the next one. Standard library only: this runs in the executor.
"""

from __future__ import annotations

import ast
import builtins
import sys

from _harness import rewrite_checked

BUILTIN_NAMES = frozenset(dir(builtins))
STDLIB_MODULES = frozenset(getattr(sys, "stdlib_module_names", ()))
J = "__mi_j"  # the judge helper object inside judge programs
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp,
           ast.DictComp, ast.GeneratorExp)


class TestCompileError(Exception):
    """The test itself cannot be judged (a dataset problem, reported as an error, never as a failure)."""


class TestProgram:
    """A compiled test: ``judge`` (module code defining the generator ``__mi_tests``), ``probes`` (child code
    objects, eval mode), ``static`` (per probe: no bindings), ``units`` (source per unit, for details),
    ``unit_code`` (child code per unit for in-candidate judging, see ``unit_code()``), ``unit_free`` (judge
    names each unit reads), ``imports`` (child code run after the program, or None), ``first_probe`` (per
    unit: index of its first static probe, for restarts after a per-test timeout)."""

    __slots__ = ("judge", "probes", "static", "units", "unit_code", "unit_free", "imports", "first_probe", "serve",
                 "aliases")


# --------------------------------------------------------------------------------------------- names --
def bound_names(nodes) -> set[str]:
    """Names bound in the scope of ``nodes`` (nested functions, classes and comprehensions not entered)."""
    out: set[str] = set()
    stack = list(nodes)
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
            stack.extend(n.decorator_list)
            continue
        if isinstance(n, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            out.add(n.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name).split(".")[0] for a in n.names if a.name != "*")
        elif isinstance(n, ast.ExceptHandler) and n.name:
            out.add(n.name)
        elif isinstance(n, ast.arg):
            out.add(n.arg)
        stack.extend(ast.iter_child_nodes(n))
    return out


def loaded_names(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def scope_bound(node) -> set[str]:
    """Names bound by lambdas/comprehensions inside ``node`` (local to them, never judge or program names)."""
    out: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Lambda):
            out.update(a.arg for a in ast.walk(n.args) if isinstance(a, ast.arg))
        elif isinstance(n, ast.comprehension):
            out.update(x.id for x in ast.walk(n.target) if isinstance(x, ast.Name))
    return out


def program_shadows(code_source: str, used: set[str]) -> frozenset[str]:
    """Builtin names the test uses that the program binds at its top level (Python semantics)."""
    wanted = used & BUILTIN_NAMES
    if not wanted:
        return frozenset()
    try:
        tree = ast.parse(code_source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return frozenset()
    return frozenset(bound_names(tree.body) & wanted)


class _Names:
    """Who owns which name in one test program (see the module docstring)."""

    def __init__(self, judge_globals: set[str], setup_bound: set[str], shadows: frozenset[str],
                 aliases: dict[str, str]):
        self.judge_globals, self.setup_bound, self.shadows, self.aliases = judge_globals, setup_bound, shadows, aliases
        self.locals: set[str] = set()

    def program(self, name: str) -> bool:
        if name in self.aliases or name in self.setup_bound:
            return True
        if name in self.locals or name in self.judge_globals:
            return False
        if name in BUILTIN_NAMES:
            return name in self.shadows
        return name not in STDLIB_MODULES

    def judge_bound(self, name: str) -> bool:
        """Judge names whose values a probe must receive (builtins and stdlib modules exist in the child too)."""
        return not self.program(name) and (name in self.locals or name in self.judge_globals)


# ------------------------------------------------------------------------------------------- probes --
def _located(new, old):
    new.lineno, new.col_offset = old.lineno, old.col_offset
    new.end_lineno, new.end_col_offset = old.end_lineno, old.end_col_offset
    return new


class _Splitter:
    def __init__(self, names: _Names, program: TestProgram):
        self.names, self.program = names, program
        self.unit = -1
        self.loop_depth = 0  # probes inside loops are asked for once per iteration: never static
        self.memo: dict[int, bool] = {}

    def mentions_program(self, node) -> bool:
        """Whether ``node`` reads a program name (memoised per statement: the splitter asks at every level)."""
        hit = self.memo.get(id(node))
        if hit is None:
            if isinstance(node, ast.Name):
                hit = isinstance(node.ctx, ast.Load) and self.names.program(node.id)
            elif isinstance(node, _SCOPES):  # names its own lambdas/comprehensions bind do not count
                hit = any(self.names.program(n) for n in loaded_names(node) - scope_bound(node))
            else:
                hit = any(self.mentions_program(c) for c in ast.iter_child_nodes(node))
            self.memo[id(node)] = hit
        return hit

    def program_side(self, node) -> bool:
        if isinstance(node, ast.Name):
            return self.names.program(node.id)
        if isinstance(node, ast.Call):
            return self.program_side(node.func)
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            return self.program_side(node.value)
        if isinstance(node, _SCOPES):
            return self.mentions_program(node)
        return False

    def expr(self, node):
        """``node`` with every probe replaced by ``(yield __mi_j.probe(k, (bindings...)))``."""
        if not isinstance(node, ast.expr) or not self.mentions_program(node):
            return node
        if self.program_side(node):
            return self.make_probe(node)
        for field, value in ast.iter_fields(node):
            if isinstance(value, list):
                setattr(node, field, [self.expr(v) if isinstance(v, ast.expr) else self.keyword(v) for v in value])
            elif isinstance(value, ast.expr):
                setattr(node, field, self.expr(value))
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.Is, ast.IsNot)):
            same = _located(ast.Call(_located(ast.Attribute(_located(ast.Name(J, ast.Load()), node), "same",
                                                            ast.Load()), node), [node.left, node.comparators[0]], []),
                            node)
            return same if isinstance(node.ops[0], ast.Is) else _located(ast.UnaryOp(ast.Not(), same), node)
        return node

    def keyword(self, v):
        if isinstance(v, ast.keyword):
            v.value = self.expr(v.value)
        return v

    def make_probe(self, node):
        hoisted: list = []
        names = loaded_names(node)
        if any(self.names.judge_bound(n) for n in names):  # else (MBPP) nothing to hoist: skip the walk
            body = self.hoist(node, hoisted, scope_bound(node))
        else:
            body = node
        if any(a in names for a in self.names.aliases):
            for n in ast.walk(body):
                if isinstance(n, ast.Name) and n.id in self.names.aliases:
                    n.id = self.names.aliases[n.id]
        try:  # the probe keeps the test's own source positions: no fix_missing_locations walk needed
            code = compile(ast.Expression(body), "<test>", "eval", dont_inherit=True, optimize=0)
        except (SyntaxError, ValueError, TypeError) as e:
            raise TestCompileError(f"cannot split {ast.unparse(node)!r}: {e}") from None
        k = len(self.program.probes)
        static = not hoisted and not self.loop_depth
        self.program.probes.append(code)
        self.program.static.append(static)
        if static and self.unit >= 0 and self.program.first_probe[self.unit] is None:
            self.program.first_probe[self.unit] = k
        args = _located(ast.Tuple(hoisted, ast.Load()), node)
        call = _located(ast.Call(_located(ast.Attribute(_located(ast.Name(J, ast.Load()), node), "probe",
                                                        ast.Load()), node),
                                 [_located(ast.Constant(k), node), args], []), node)
        return _located(ast.Yield(call), node)

    def hoist(self, node, hoisted: list, local: set[str]):
        """Replace maximal judge-only sub-expressions of a probe by ``__mi_b<i>`` names (their values)."""
        if isinstance(node, ast.expr) and not isinstance(node, _SCOPES):
            names = loaded_names(node)
            if names and not names & local and not any(self.names.program(n) for n in names) \
                    and any(self.names.judge_bound(n) for n in names):
                hoisted.append(node)
                return _located(ast.Name(f"__mi_b{len(hoisted) - 1}", ast.Load()), node)
        for field, value in ast.iter_fields(node):
            if isinstance(value, list):
                setattr(node, field, [self.hoist(v, hoisted, local) if isinstance(v, ast.AST) else v for v in value])
            elif isinstance(value, ast.AST):
                setattr(node, field, self.hoist(value, hoisted, local))
        return node

    def statement(self, stmt):
        """Rewrite the expressions of one statement (nested statements included, nested defs refused)."""
        self.memo.clear()
        for n in ast.walk(stmt):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and self.mentions_program(n):
                raise TestCompileError("a function or class defined inside a test may not call the program")
        return _ExprRewriter(self).visit(stmt)


class _ExprRewriter(ast.NodeTransformer):
    def __init__(self, splitter: _Splitter):
        self.splitter = splitter

    def _loop(self, node):
        if isinstance(node, (ast.For, ast.AsyncFor)):
            node.iter = self.splitter.expr(node.iter)
        if isinstance(node, ast.While):
            self.splitter.loop_depth += 1
            node.test = self.splitter.expr(node.test)
            self.splitter.loop_depth -= 1
        self.splitter.loop_depth += 1
        node.body = [self.visit(s) for s in node.body]
        self.splitter.loop_depth -= 1
        node.orelse = [self.visit(s) for s in node.orelse]
        return node

    visit_For = visit_While = visit_AsyncFor = _loop

    def generic_visit(self, node):
        if isinstance(node, ast.expr):
            return self.splitter.expr(node)
        return super().generic_visit(node)


# -------------------------------------------------------------------------------------------- units --
_UNIT_TEMPLATE = f"""
try:
    {J}.begin(UNIT)
    pass
except {J}.NeedsCandidate:
    yield {J}.in_candidate(UNIT, locals())
except {J}.Skip:
    pass
except AssertionError as e:
    {J}.failed(UNIT, e)
except Exception as e:
    {J}.error(UNIT, e)
else:
    {J}.passed(UNIT)
"""


def _wrap_unit(k: int, body: list) -> ast.Try:
    tree = ast.parse(_UNIT_TEMPLATE.replace("UNIT", str(k))).body[0]
    tree.body[1:] = body
    return tree


def unit_code(p: TestProgram, k: int):
    """Unit ``k`` as the candidate's process runs it when it is judged there (program names resolve in its
    namespace, comparisons checked: ``_harness.rewrite_checked``). Compiled on first need: most programs never
    need it, and compiling it for every unit doubled the cost of a test."""
    code = p.unit_code[k]
    if code is None:
        module = ast.parse(p.units[k], "<test>")
        for n in ast.walk(module):
            if isinstance(n, ast.Name) and n.id in p.aliases:
                n.id = p.aliases[n.id]
        code = p.unit_code[k] = compile(rewrite_checked(module), "<test>", "exec", dont_inherit=True, optimize=0)
    return code


def _parse(source: str, what: str) -> list:
    try:
        return ast.parse(source, "<test>").body
    except (SyntaxError, ValueError) as e:
        raise TestCompileError(f"{what} does not compile: {type(e).__name__}: {e}") from None


def _new_program() -> TestProgram:
    p = TestProgram()
    p.probes, p.static, p.units, p.unit_code, p.unit_free, p.first_probe = [], [], [], [], [], []
    p.aliases = {}
    return p


def _add_unit(p: TestProgram, splitter: _Splitter, names: _Names, stmts: list, source: str) -> ast.Try:
    """Unit ``k``: ``stmts`` (parsed for this program alone, rewritten in place) and its ``source``."""
    k = len(p.units)
    p.units.append(source)
    p.first_probe.append(None)
    p.unit_code.append(None)
    p.aliases = names.aliases
    free = set()
    for s in stmts:
        free |= loaded_names(s)
    p.unit_free.append(tuple(sorted(n for n in free if names.judge_bound(n))))
    splitter.unit = k
    body = [splitter.statement(s) for s in stmts]
    return _wrap_unit(k, body)


def _judge_function(name: str, args: list[str], body: list) -> ast.FunctionDef:
    guard_at = ast.parse("x").body[0]  # any node at line 1: the position generated nodes report
    arguments = ast.arguments(posonlyargs=[], args=[_located(ast.arg(a), guard_at) for a in args], vararg=None, kwonlyargs=[],
                              kw_defaults=[], kwarg=None, defaults=[])
    guard = ast.parse("if False:\n    yield None").body  # a generator even without probes
    function = ast.FunctionDef(name, arguments, body + guard, [], None)
    function.lineno, function.col_offset, function.end_lineno, function.end_col_offset = 1, 0, 1, 0
    return function


def _stdlib_prelude(nodes: list, names: _Names) -> list:
    """``import math`` etc. for the standard-library modules a test uses without importing them (MBPP tests
    rely on the program's imports: ``math.isclose``, ``sys.getsizeof``); the judge has its own copies."""
    used = set()
    for n in nodes:
        used |= loaded_names(n)
    wanted = sorted(m for m in used & STDLIB_MODULES if not names.program(m) and m not in names.judge_globals)
    return [ast.parse(f"try:\n    import {m}\nexcept ImportError:\n    pass").body[0] for m in wanted]


def _finish(p: TestProgram, module_body: list, imports_src: list[str]) -> TestProgram:
    module = ast.Module(body=module_body, type_ignores=[])  # every node carries a position already
    p.judge = compile(module, "<test>", "exec", dont_inherit=True, optimize=0)
    p.serve = not all(p.static)
    p.imports = compile("\n".join(imports_src), "<test imports>", "exec", dont_inherit=True) if imports_src else None
    return p


def compile_asserts(tests: list[str], setup: str, imports: list[str], shadows: frozenset[str]) -> TestProgram:
    """An assert list (MBPP): one unit per entry; ``imports`` (sanitized MBPP's ``test_imports``) run in the
    judge and, after the program, in the candidate's process; names ``setup`` binds belong to the program."""
    import_nodes = [n for src in imports for n in _parse(src, "test import")]
    parsed = [_parse(t, "test") for t in tests]
    judge_globals = bound_names(import_nodes) | bound_names([n for body in parsed for n in body])
    try:  # a setup that does not compile is the candidate process's to report ("... in setup")
        setup_bound = bound_names(ast.parse(setup).body) if setup else set()
    except (SyntaxError, ValueError):
        setup_bound = set()
    names = _Names(judge_globals, setup_bound, shadows, {})
    p = _new_program()
    splitter = _Splitter(names, p)
    units = [_add_unit(p, splitter, names, body, src.strip()) for body, src in zip(parsed, tests)]
    prelude = _stdlib_prelude([n for body in parsed for n in body], names)
    return _finish(p, prelude + import_nodes + [_judge_function("__mi_tests", [], units)], imports)


def compile_check(test: str, entry_point: str, shadows: frozenset[str]) -> TestProgram:
    """A HumanEval test: a module defining ``check(candidate)``; the judge calls it with the entry point."""
    if not entry_point:
        raise TestCompileError("a check-function test needs an entry point")
    body = _parse(test, "test")
    checks = [n for n in body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1 or len(checks[0].args.args) != 1:
        raise TestCompileError("a check-function test must define exactly one check(candidate)")
    check = checks[0]
    param = check.args.args[0].arg
    module_rest = [n for n in body if n is not check]
    names = _Names(bound_names(module_rest) | {"check"}, set(), shadows, {param: entry_point})
    names.locals = bound_names(check.body)
    names.locals.discard(param)
    p = _new_program()
    splitter = _Splitter(names, p)
    asserting = [s for s in check.body if any(isinstance(n, ast.Assert) for n in ast.walk(s))
                 and splitter.mentions_program(s)]
    new_body = []
    for stmt in check.body:
        if stmt in asserting:
            new_body.append(_add_unit(p, splitter, names, [stmt], ast.unparse(stmt).strip()))
        else:
            splitter.unit = -1
            new_body.append(splitter.statement(stmt))
    if not asserting:
        raise TestCompileError("the check function asserts nothing about the candidate")
    if any(splitter.mentions_program(n) for n in module_rest):
        raise TestCompileError("only the check function may call the program")
    rest = module_rest
    call = ast.parse("yield from check(None)").body
    names.locals = set()  # module level: the check function's locals do not count
    prelude = _stdlib_prelude(body, names)
    p = _finish(p, prelude + rest + [_judge_function("check", [param], new_body), _judge_function("__mi_tests", [], call)], [])
    p.serve = True  # the check function may run probes again (loops, helpers): the child waits for requests
    return p
