"""Every command the docs show still parses, so the pages cannot drift from the code (issue 23).

What counts as a command: each line of a code block in docs/*.md (fenced ```bash / ```sh blocks, `$ ` lines of plain
fenced blocks, and indented blocks) that runs `vla-rl ...` or `python experiments/X.py ...` (` \\` continuations
joined, `&&` chains split, `VAR="..."` lines expanded), and each inline `vla-rl ...` / `python experiments/...` span.
Nothing runs: a `vla-rl` command goes through the CLI's own parsing and `validate()` (`parse_config`), a script's
options through its own argparse parser (captured from its `main()` before it parses), and each python block of
the docs is compiled and its imported names looked up.

Levels, from strict to loose:
- a block command without placeholders is parsed and validated in full (PLACEHOLDERS below are substituted first);
- a block command with `...` or `<...>` (NAMES_ONLY below, listed so every such line is visible) and an inline span
  have their verb or script and every `--option` name checked;
- lines that are not this project's commands are SKIPPED below, each with its reason.
Every `experiments/...yaml` and `docs/...json` a command names must exist (the config it runs, the figure it writes).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from vla_rl.base.errors import ConfigError
from vla_rl.cli import VERBS, _load
from vla_rl.config import parse_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))

# Placeholder values a page uses in a usage line, and what the test puts in their place.
PLACEHOLDERS = {"ID": "tabletop/touch-color", "N": "10", "S": "1", "X": "0.1", "DIR": "outputs/doc_check",
                "OUT": "outputs/doc_check", "C": "experiments/train/quickstart.yaml", "HEAD_IP:6379": "127.0.0.1:6379"}

# Block commands that elide options (`...`) or name a value in words (`<...>`): only their option names are checked.
NAMES_ONLY = {
    "commands.md": ["vla-rl pretrain --out outputs/quickstart/pretrain ... --resume true"],
    "training.md": ["vla-rl train ... --reward model --reward_model outputs/rm",
                    "vla-rl train ... --val_episodes 30"],
    "learning.md": ["python experiments/bench_gradient_snr.py --policy <the sanity task's BC start> "
                    "> docs/bench_gradient_snr_sanity.json"],
}

# Lines of code blocks and inline spans that are not this project's commands, and why.
SKIPPED = {
    "ray start": "Ray's own CLI (cluster.md)",
    "ray job submit": "Ray's own CLI; the `vla-rl train` it submits is checked",
    "export RAY_AUTH_MODE=token": "a shell setting",
    "scp HEAD_IP:.ray/auth_token": "copies a file between machines",
    "python ../shared/tools/learning_table.py": "a tool outside this repository",
    "python -m pytest": "the test suite",
    "vla-rl VERB: error:": "the shape of an error message, not a command",
    "vla-rl <verb> --help": "every verb takes --help",
}


@dataclass
class Command:
    page: str
    line: int
    text: str  # as the page shows it (continuations joined)
    inline: bool = False
    expected: list[str] | None = None  # the output lines a `$ ` block shows under it

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _skipped(text: str) -> bool:
    return any(text.startswith(prefix) for prefix in SKIPPED)


def _code_blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """(first line number, kind, lines) of each code block: kind is the fence's language, "" or "indented"."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if fence:
            j = i + 1
            while not lines[j].strip().startswith("```"):
                j += 1
            blocks.append((i + 2, fence.group(2), [ln[len(fence.group(1)):] for ln in lines[i + 1:j]]))
            i = j + 1
        elif lines[i].startswith("    ") and lines[i].strip() and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            blocks.append((i + 1, "indented", [ln[4:] for ln in lines[i:j]]))
            i = j
        else:
            i += 1
    return blocks


def _shell_commands(page: str, start: int, kind: str, lines: list[str]) -> list[Command]:
    out: list[Command] = []
    variables: dict[str, str] = {}
    i = 0
    while i < len(lines):
        number, line = start + i, lines[i].rstrip()
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1].rstrip() + " " + lines[i].strip()
        i += 1
        if kind == "":
            if not line.startswith("$ "):
                if out and line.strip():
                    out[-1].expected = [*(out[-1].expected or []), line.strip()]
                continue
            line = line[2:]
        line = re.sub(r"\s+#\s.*$", "", line).strip()  # a trailing comment
        assignment = re.fullmatch(r'([A-Z_]+)="(.*)"', line)
        if assignment:
            variables[assignment.group(1)] = assignment.group(2)
            continue
        for name, value in variables.items():
            line = line.replace(f"${name}", value)
        for part in line.split("&&"):
            part = part.strip()
            if part and not part.startswith("#"):
                out.append(Command(page, number, part))
    return out


def doc_commands() -> list[Command]:
    commands: list[Command] = []
    for path in DOCS:
        text = path.read_text()
        for start, kind, lines in _code_blocks(text):
            if kind in ("bash", "sh", "shell", "", "indented"):
                commands += _shell_commands(path.name, start, kind, lines)
        for m in re.finditer(r"`((?:vla-rl|python) [^`]*)`", text):
            line = text.count("\n", 0, m.start()) + 1
            commands += [Command(path.name, line, part.strip(), inline=True) for part in m.group(1).split("&&")]
    return commands


def _tokens(text: str) -> tuple[list[str], list[str], bool]:
    """(argv after the program, redirect targets, whether a value is elided) of one command line."""
    elided = "..." in text.split() or bool(re.search(r"<[^<>]*>", text))
    text = re.sub(r"<[^<>]*>", "PLACEHOLDER", text)
    text = re.sub(r"\[(--[^\[\]]*)\]", r"\1", text)  # an optional `[--seed S]`: checked like the others
    tokens = shlex.split(text, comments=True)
    redirects = [tokens[k + 1] for k, t in enumerate(tokens[:-1]) if t in (">", ">>", "2>")]
    cut = next((k for k, t in enumerate(tokens) if t in (">", ">>", "2>", "|")), len(tokens))
    tokens = [PLACEHOLDERS.get(t, t) for t in tokens[:cut] if t != "..."]
    return tokens, redirects, elided


def _options(tokens: list[str]) -> list[str]:
    return [t.split("=", 1)[0] for t in tokens if t.startswith("--")]


def _check_named_files(command: Command, tokens: list[str], redirects: list[str]) -> None:
    for name in tokens + redirects:
        if re.fullmatch(r"(experiments/\S+\.ya?ml|docs/\S+\.json)", name):
            assert (ROOT / name).is_file(), f"{command.id}: `{command.text}` names {name}, which does not exist"


COMMANDS = [c for c in doc_commands() if not _skipped(c.text)]
VLA_RL = [c for c in COMMANDS if re.match(r"vla-rl\b", c.text) or " -- vla-rl " in c.text]
SCRIPTS = [c for c in COMMANDS if c.text.startswith("python experiments/")]


def test_every_command_of_the_docs_is_checked_or_skipped_by_name():
    assert len(VLA_RL) >= 40 and len(SCRIPTS) >= 30  # the extraction found the pages' commands
    unknown = [f"{c.id}: {c.text}" for c in COMMANDS if c not in VLA_RL and c not in SCRIPTS]
    assert not unknown, f"commands of no known kind (check them, or add them to SKIPPED with a reason): {unknown}"
    elided = {}
    for c in COMMANDS:
        if not c.inline and _tokens(c.text)[2]:
            elided.setdefault(c.page, []).append(c.text)
    assert elided == NAMES_ONLY, "block commands checked by option names only changed: update NAMES_ONLY"
    everything = doc_commands()
    for prefix in SKIPPED:
        assert any(c.text.startswith(prefix) for c in everything), f"SKIPPED entry {prefix!r} matches no doc line"


# --- vla-rl ---------------------------------------------------------------------------------------------------------

def _verb_and_args(command: Command) -> tuple[str, list[str], list[str], bool]:
    tokens, redirects, elided = _tokens(command.text)
    tokens = tokens[tokens.index("vla-rl") + 1:]
    if not tokens or tokens[0].startswith("-"):
        return "", tokens, redirects, elided
    if tokens[0] == "reward":
        subs = tokens[1].split("|") if len(tokens) > 1 else []
        for sub in subs[1:]:
            assert f"reward {sub}" in VERBS, f"{command.id}: `{command.text}`: no verb 'reward {sub}'"
        return (f"reward {subs[0]}" if subs else "reward"), tokens[2:], redirects, elided
    return tokens[0], tokens[1:], redirects, elided


def _option_names(verb: str) -> set[str]:
    import draccus

    parser = draccus.argparsing.ArgumentParser(config_class=_load(VERBS[verb][1]), exit_on_error=False, prog=verb)
    return {o for action in parser.parser._actions for o in action.option_strings}


@pytest.mark.parametrize("command", VLA_RL, ids=lambda c: c.id)
def test_a_vla_rl_command_of_the_docs_parses(command):
    verb, args, redirects, elided = _verb_and_args(command)
    if verb == "" and _options(args) in (["--help"], ["--version"]):
        return
    assert verb in VERBS, f"{command.id}: `{command.text}`: {verb!r} is not a verb of vla-rl ({sorted(VERBS)})"
    unknown = sorted(set(_options(args)) - _option_names(verb))
    assert not unknown, f"{command.id}: `{command.text}`: vla-rl {verb} has no option {unknown}"
    _check_named_files(command, args, redirects)
    if command.inline or elided:
        return
    try:
        parse_config(_load(VERBS[verb][1]), args, prog=f"vla-rl {verb}")
        shown = None
    except ConfigError as e:
        shown = f"vla-rl {verb}: error: {' '.join(str(e).split())}"  # as vla_rl.cli._fail prints it
    if command.expected is None:
        assert shown is None, f"{command.id}: `{command.text}` is refused: {shown}"
    else:  # a page showing an error: the error is the one the CLI gives (`...` stands for any text)
        pattern = ".*?".join(re.escape(part) for part in command.expected[0].split("..."))
        assert shown is not None and re.fullmatch(pattern, shown), \
            f"{command.id}: the page shows\n  {command.expected[0]}\nbut the CLI says\n  {shown}"


# --- python experiments/X.py ----------------------------------------------------------------------------------------

class _Parsed(Exception):
    def __init__(self, parser):
        self.parser = parser


_PARSERS: dict[str, argparse.ArgumentParser] = {}


def script_parser(script: str) -> argparse.ArgumentParser:
    """The script's own argparse parser: its `main()` runs until it parses, which is stopped there (nothing runs)."""
    if script not in _PARSERS:
        def stop(parser, args=None, namespace=None):
            raise _Parsed(parser)

        path, saved_path, saved_argv = ROOT / script, list(sys.path), sys.argv
        assert path.is_file(), f"{script} does not exist"
        sys.argv = [str(path)]
        try:
            with mock.patch.object(argparse.ArgumentParser, "parse_args", stop), pytest.raises(_Parsed) as parsed:
                runpy.run_path(str(path), run_name="__main__")
        finally:
            sys.path[:], sys.argv = saved_path, saved_argv
        _PARSERS[script] = parsed.value.parser
    return _PARSERS[script]


def _script_options(parser: argparse.ArgumentParser, args: list[str]) -> set[str]:
    names = {o for a in parser._actions for o in a.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and args and args[0] in action.choices:
            names |= {o for a in action.choices[args[0]]._actions for o in a.option_strings}
    return names


@pytest.mark.parametrize("command", SCRIPTS, ids=lambda c: c.id)
def test_a_script_command_of_the_docs_parses(command, capsys):
    tokens, redirects, elided = _tokens(command.text)
    script, args = tokens[1], tokens[2:]
    parser = script_parser(script)
    unknown = sorted(set(_options(args)) - _script_options(parser, args))
    assert not unknown, f"{command.id}: `{command.text}`: {script} has no option {unknown}"
    _check_named_files(command, args, redirects)
    if command.inline or elided:
        return
    try:
        ns = parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"{command.id}: `{command.text}` is refused by {script}: {capsys.readouterr().err.strip()}")
    overrides = getattr(ns, "set", None)
    if overrides is not None:  # bench_learning / bench_sanity: `--set KEY=VALUE` are options of `vla-rl train`
        from vla_rl.train_config import TrainConfig

        argv = ["--config_path", str(ns.config), "--policy", "outputs/doc_check"]
        for item in overrides:
            key, _, value = item.partition("=")
            argv += [f"--{key}", value]
        try:
            parse_config(TrainConfig, argv, prog="vla-rl train")
        except ConfigError as e:
            pytest.fail(f"{command.id}: `{command.text}`: its train options are refused: {e}")


# --- python code blocks ---------------------------------------------------------------------------------------------

def python_blocks() -> list[tuple[str, str]]:
    return [(f"{path.name}:{start}", "\n".join(lines)) for path in DOCS
            for start, kind, lines in _code_blocks(path.read_text()) if kind == "python"]


def _resolve(node: ast.AST, names: dict) -> object | None:
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, names)
        if inspect.ismodule(owner):
            assert hasattr(owner, node.attr), f"{owner.__name__} has no {node.attr!r}"
            return getattr(owner, node.attr)
    return None


@pytest.mark.parametrize("where,code", python_blocks(), ids=[w for w, _ in python_blocks()])
def test_a_python_block_of_the_docs_compiles_and_names_real_things(where, code):
    tree = ast.parse(compile(code, where, "exec", flags=ast.PyCF_ONLY_AST), where)
    names: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                module = importlib.import_module(alias.name)
                names[alias.asname or alias.name.split(".")[0]] = module if alias.asname else \
                    importlib.import_module(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module} has no {alias.name!r}"
                names[alias.asname or alias.name] = getattr(module, alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            _resolve(node, names)
        if isinstance(node, ast.Call) and callable(target := _resolve(node.func, names)):
            try:
                params = inspect.signature(target).parameters
            except (TypeError, ValueError):
                continue
            if any(p.kind is p.VAR_KEYWORD for p in params.values()):
                continue
            unknown = [k.arg for k in node.keywords if k.arg is not None and k.arg not in params]
            assert not unknown, f"{where}: {ast.unparse(node.func)}() takes no {unknown}"
