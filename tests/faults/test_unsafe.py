"""Nothing unsafe: payloads are never unpickled or evaluated, and Lua scripts are never built
from user input (they are the ``.lua`` files of the package; keys and values go to Redis only as
``KEYS``/``ARGV``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pulse_trio"
LUA = PACKAGE / "lua"
#: Modules that may run a script's source (the transport's EVALSHA/EVAL, and the loader).
SCRIPT_RUNNERS = {"_lua.py", "_redis/_client.py"}
#: Modules whose command tables name EVAL & co. (routing and the retry rule).
COMMAND_TABLES = {"_redis/_client.py", "_redis/_cluster.py", "_redis/_requests.py"}
#: Deserialisers that can run code, or evaluate their input.
UNSAFE_MODULES = {
    "pickle",
    "cPickle",
    "marshal",
    "shelve",
    "dill",
    "cloudpickle",
    "yaml",
    "jsonpickle",
}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__", "execfile"}
SCRIPT_COMMANDS = {"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO", "FUNCTION"}


def _modules() -> list[tuple[str, ast.Module]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        found.append((relative, ast.parse(path.read_text("utf-8"), filename=str(path))))
    assert len(found) > 20
    return found


MODULES = _modules()


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        base = func.value
        prefix = base.id if isinstance(base, ast.Name) else "?"
        return f"{prefix}.{func.attr}"
    return "?"


@pytest.mark.parametrize(("relative", "tree"), MODULES, ids=[m[0] for m in MODULES])
def test_no_unsafe_deserialiser_or_evaluation(relative: str, tree: ast.Module) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {alias.name.split(".")[0] for alias in node.names}
            assert not names & UNSAFE_MODULES, f"{relative}:{node.lineno} imports {names}"
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            assert module not in UNSAFE_MODULES, f"{relative}:{node.lineno} imports {module}"
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            assert name not in UNSAFE_BUILTINS, f"{relative}:{node.lineno} calls {name}"
            assert name.split(".")[0] not in UNSAFE_MODULES, f"{relative}:{node.lineno} {name}"
            if name.endswith("execute_script"):
                assert relative in SCRIPT_RUNNERS, f"{relative}:{node.lineno} runs a script"
            if name in {"Script.of", "Script"}:
                assert relative in SCRIPT_RUNNERS, f"{relative}:{node.lineno} builds a script"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
            word = node.value.decode() if isinstance(node.value, bytes) else node.value
            if word.upper() in SCRIPT_COMMANDS and word.isupper():
                assert relative in COMMAND_TABLES, (
                    f"{relative}:{node.lineno} names {word!r}: only the transport sends scripts"
                )


def _module_tuples(tree: ast.Module) -> dict[str, tuple[str, ...]]:
    """Module-level ``NAME = ("a", "b")`` (also annotated) with only string constants."""
    tuples = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if isinstance(value, ast.Tuple) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts
        ):
            for target in targets:
                if isinstance(target, ast.Name):
                    tuples[target.id] = tuple(e.value for e in value.elts)  # type: ignore[attr-defined]
    return tuples


def _loop_values(tree: ast.Module, call: ast.Call, name: str) -> tuple[str, ...]:
    """The constant strings ``name`` takes in the comprehension around ``call``."""
    tuples = _module_tuples(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.DictComp | ast.ListComp | ast.SetComp | ast.GeneratorExp):
            continue
        if not any(sub is call for sub in ast.walk(node)):
            continue
        for generator in node.generators:
            if (
                isinstance(generator.target, ast.Name)
                and generator.target.id == name
                and isinstance(generator.iter, ast.Name)
                and generator.iter.id in tuples
            ):
                return tuples[generator.iter.id]
    raise AssertionError(f"{name!r} is not a loop over a constant tuple of script names")


def _script_names(tree: ast.Module, call: ast.Call, arg: ast.expr) -> list[str]:
    """Every value ``arg`` (a script name) can take; fails unless it is built from constants."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.Name):
        return list(_loop_values(tree, call, arg.id))
    if isinstance(arg, ast.JoinedStr):
        names = [""]
        for part in arg.values:
            if isinstance(part, ast.Constant):
                names = [n + str(part.value) for n in names]
            elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name):
                values = _loop_values(tree, call, part.value.id)
                names = [n + v for n in names for v in values]
            else:
                raise AssertionError(f"script name built from {ast.dump(part)}")
        return names
    raise AssertionError(f"script name built from {ast.dump(arg)}")


def test_every_script_is_a_file_of_the_package_named_by_constants() -> None:
    lua_files = {p.stem for p in LUA.glob("*.lua")}
    used: set[str] = set()
    for relative, tree in MODULES:
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and _call_name(node) == "bind_script"):
                continue
            assert len(node.args) == 2, f"{relative}:{node.lineno}"
            names = _script_names(tree, node, node.args[1])
            for keyword in node.keywords:
                assert keyword.arg == "prelude", f"{relative}:{node.lineno}"
                assert isinstance(keyword.value, ast.Constant), f"{relative}:{node.lineno}"
                names.append(str(keyword.value.value))
            assert set(names) <= lua_files, f"{relative}:{node.lineno}: {set(names) - lua_files}"
            used |= set(names)
    # Every shipped script is used (a dead file would escape this check).
    assert used == lua_files


def test_the_loader_builds_sources_only_from_package_files() -> None:
    tree = dict(MODULES)["_lua.py"]
    bind = next(
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "bind_script"
    )
    for node in ast.walk(bind):
        if isinstance(node, ast.Assign | ast.AugAssign):
            value = node.value
            parts = [value]
            while parts:
                part = parts.pop()
                if isinstance(part, ast.BinOp):
                    parts += [part.left, part.right]
                elif isinstance(part, ast.Call):
                    assert _call_name(part) == "script_source", ast.dump(part)
                    assert all(isinstance(a, ast.Name) for a in part.args)
                elif isinstance(part, ast.Constant):
                    assert part.value == "\n"
                else:
                    assert isinstance(part, ast.Name), ast.dump(part)
                    assert part.id == "source", ast.dump(part)
    loader = next(
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "script_source"
    )
    text = ast.unparse(loader)
    assert 'resources.files("pulse_trio").joinpath("lua", f"{name}.lua")' in text.replace("'", '"')


@pytest.mark.parametrize("path", sorted(LUA.glob("*.lua")), ids=lambda p: p.name)
def test_lua_scripts_load_no_code(path: Path) -> None:
    source = path.read_text("utf-8")
    code = re.sub(r"--[^\n]*", "", source)  # comments out
    for word in ("loadstring", "load(", "dofile", "loadfile", "require", "setfenv", "getfenv"):
        assert word not in code, f"{path.name} uses {word}"
    # Keys come from KEYS (or are derived in the script from them and from ARGV); the
    # script never runs redis.call with a command name taken from its input.
    for match in re.finditer(r"redis\.p?call\(\s*([^,)]+)", code):
        command = match.group(1).strip()
        built = re.fullmatch(r"unpack\((\w+)", command)
        if built:  # a table whose first element, the command, is a constant
            table = built.group(1)
            assert re.search(rf"local {table} = \{{'[A-Z]+'", code), f"{path.name}: {table}"
            continue
        assert re.fullmatch(r"'[A-Za-z]+'|\"[A-Za-z]+\"", command), f"{path.name}: {command}"
