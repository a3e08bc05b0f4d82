"""The documentation's examples work: README.md and docs/*.md.

* Every fenced ```python block runs, each exec'd in a fresh namespace by one worker process (so
  torch, the sentence model and BenchMARL load once), with the repository root as its working
  directory and `HIS_MARL_CACHE` in a temporary folder shared by the blocks (so the prompt pool
  is embedded once). Blocks share the worker's imported modules, not their names: each imports
  what it uses. A block that cannot run here carries, on the line before it (blank
  lines between allowed), an HTML comment `<!-- docs-test: skip (REASON) -->`; it is reported as
  skipped with that reason, so nothing is left out silently. A marker that is not followed by a
  python block is an error.
* Shell examples are not run, but every flag they pass to `train.py`, `evaluate.py`,
  `benchmark.py` (or `his-train`, `his-evaluate`, `his-benchmark`), to a `benchmarks/*.py` script
  or to `python -m experiments.measure_hiqm` must be one of that program's `--help`, and a value
  given to a flag with choices must be one of them. Fenced ```bash/```sh/```shell blocks and inline
  code spans of the prose are checked (values only in fenced blocks: prose may use placeholders).
"""
from __future__ import annotations

import json
import os
import re
import select
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PYTHON_LANGS = {"python", "py", "python3"}
SHELL_LANGS = {"bash", "sh", "shell", "console"}
BLOCK_TIMEOUT_S = 300

MARKER = re.compile(r"^\s*<!--\s*docs-test:(?P<body>.*?)-->\s*$")
SKIP = re.compile(r"^\s*skip\s*\((?P<reason>.+)\)\s*$")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+.-]*)")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip_reason: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def inline_spans(prose: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The `code` spans of the prose, (line number, text); a span may wrap lines, not paragraphs."""
    text = "\n".join(line for _, line in prose)
    starts = [0]
    for _, line in prose:
        starts.append(starts[-1] + len(line) + 1)
    found = []
    for match in re.finditer(r"(?<!`)`(?!`)((?:[^`\n]|\n(?!\s*\n))+?)`(?!`)", text):
        line_index = next(k for k in range(len(prose)) if starts[k + 1] > match.start())
        found.append((prose[line_index][0], " ".join(match.group(1).split())))
    return found


def parse(path: Path) -> tuple[list[Block], list[tuple[int, str]], list[str]]:
    """The fenced blocks of a Markdown file, the inline code spans outside them (line, text), and errors."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    prose: list[tuple[int, str]] = []  # (line number, text) of the lines outside fenced blocks
    errors: list[str] = []
    pending: tuple[int, str | None] | None = None  # a docs-test marker waiting for its block
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line)
        if marker:
            if pending:
                errors.append(f"{path.name}:{pending[0]}: docs-test marker not followed by a python block")
            skip = SKIP.match(marker.group("body"))
            if not skip:
                errors.append(f"{path.name}:{i + 1}: unknown docs-test marker {line.strip()!r}; "
                              "allowed: <!-- docs-test: skip (REASON) -->")
            pending = (i + 1, skip.group("reason").strip() if skip else None)
            i += 1
            continue
        fence = FENCE.match(line)
        if fence:
            indent, mark, lang = fence.group("indent"), fence.group("fence"), fence.group("lang").lower()
            body: list[str] = []
            j = i + 1
            closing = re.compile(rf"^[ \t]*{re.escape(mark[0])}{{{len(mark)},}}\s*$")
            while j < len(lines) and not closing.match(lines[j]):
                text = lines[j]
                body.append(text[len(indent):] if text.startswith(indent) else text.lstrip())
                j += 1
            if j == len(lines):
                errors.append(f"{path.name}:{i + 1}: fence never closed")
            reason = None
            if pending:
                if lang in PYTHON_LANGS:
                    reason = pending[1]
                else:
                    errors.append(f"{path.name}:{pending[0]}: docs-test marker before a {lang or 'plain'} "
                                  "block; only python blocks are run")
                pending = None
            blocks.append(Block(path, i + 1, lang, "\n".join(body) + "\n", reason))
            i = j + 1
            continue
        if pending and line.strip():
            errors.append(f"{path.name}:{pending[0]}: docs-test marker not followed by a python block")
            pending = None
        prose.append((i + 1, line))
        i += 1
    spans = inline_spans(prose)
    if pending:
        errors.append(f"{path.name}:{pending[0]}: docs-test marker at the end of the file")
    return blocks, spans, errors


PARSED = {path: parse(path) for path in DOC_FILES}
PYTHON_BLOCKS = [block for blocks, _, _ in PARSED.values() for block in blocks if block.lang in PYTHON_LANGS]


def test_docs_exist_and_markers_are_well_formed():
    assert (ROOT / "README.md").is_file() and len(DOC_FILES) > 1, "README.md and docs/*.md expected"
    errors = [error for _, _, file_errors in PARSED.values() for error in file_errors]
    assert not errors, "\n".join(errors)
    assert PYTHON_BLOCKS, "no python example found"


# One worker process runs the blocks, one after another, each exec'd in a fresh namespace (its own
# globals, `__name__ == "__main__"`, the working directory reset to the repository root): torch, the
# sentence model and BenchMARL load once for all of them instead of once per block. Its stdout and
# stderr go to a file per block; the protocol runs over a duplicate of its original stdout.
WORKER = r"""
import contextlib, json, os, sys, traceback
protocol = os.fdopen(os.dup(1), "w")
root = os.getcwd()
for request in sys.stdin:
    request = json.loads(request)
    with open(request["log"], "w") as log:
        sys.stdout.flush(); sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1); os.dup2(log.fileno(), 2)
        ok, error = True, ""
        try:
            sys.argv = [request["where"]]
            namespace = {"__name__": "__main__", "__builtins__": __builtins__}
            exec(compile(request["code"], request["where"], "exec"), namespace)
        except BaseException:
            ok, error = False, traceback.format_exc()
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(saved[0], 1); os.dup2(saved[1], 2)
            os.close(saved[0]); os.close(saved[1])
            os.chdir(root)
    protocol.write(json.dumps({"ok": ok, "error": error}) + "\n")
    protocol.flush()
"""


class BlockRunner:
    """The worker process; restarted after a block that killed it or ran past its time."""

    def __init__(self, cache: Path, logs: Path):
        self.cache, self.logs, self.process, self.count = cache, logs, None, 0

    def start(self):
        env = dict(os.environ, HIS_MARL_CACHE=str(self.cache), MPLBACKEND="Agg", WANDB_MODE="disabled",
                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
        self.process = subprocess.Popen([sys.executable, "-u", "-c", WORKER], cwd=ROOT, env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, block: Block) -> tuple[bool, str]:
        if self.process is None or self.process.poll() is not None:
            self.start()
        self.count += 1
        log = self.logs / f"block_{self.count:03d}.log"
        self.process.stdin.write(json.dumps({"code": block.code, "where": block.where, "log": str(log)}) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], BLOCK_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else ""
        output = log.read_text(errors="replace") if log.exists() else ""
        if not line:
            self.stop()
            why = f"ran past {BLOCK_TIMEOUT_S} s" if not ready else "killed the worker process"
            return False, f"the example {why}\n--- output\n{output[-5000:]}"
        reply = json.loads(line)
        return reply["ok"], f"{reply['error']}\n--- output\n{output[-5000:]}"

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def block_runner(tmp_path_factory):
    """HIS_MARL_CACHE is a fresh folder shared by every block: the prompt pool is embedded once. The
    worker ends with this module, so it holds no memory while the rest of the suite runs."""
    runner = BlockRunner(tmp_path_factory.mktemp("his_marl_cache"), tmp_path_factory.mktemp("docs_blocks"))
    yield runner
    runner.stop()


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[block.where for block in PYTHON_BLOCKS])
def test_python_block_runs(block: Block, block_runner: BlockRunner):
    if block.skip_reason is not None:
        pytest.skip(f"{block.where}: {block.skip_reason}")
    ok, report = block_runner.run(block)
    assert ok, f"the example at {block.where} failed:\n{block.code}\n--- error\n{report}"


# ---------------------------------------------------------------- shell examples: flags against --help

CLIS = {  # how a command line names a program -> the argv that prints its --help
    "train.py": ["train.py"], "his-train": ["train.py"],
    "evaluate.py": ["evaluate.py"], "his-evaluate": ["evaluate.py"],
    "benchmark.py": ["benchmark.py"], "his-benchmark": ["benchmark.py"],
    "-m experiments.measure_hiqm": ["-m", "experiments.measure_hiqm"],
    "-m his_cli.paper_results": ["-m", "his_cli.paper_results"],
}
OPERATORS = {";", "&&", "||", "|", "&", "(", ")", ";;", "|&"}
_HELP: dict[str, tuple[set[str], dict[str, set[str]]]] = {}


def program_help(program: str) -> tuple[set[str], dict[str, set[str]]]:
    """The flags of a program's --help, and the choices of those that have them (run once each)."""
    if program not in _HELP:
        argv = CLIS.get(program) or [program]
        done = subprocess.run([sys.executable, *argv, "--help"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, PYTHONWARNINGS="ignore"))
        assert done.returncode == 0, f"{' '.join(argv)} --help failed:\n{done.stderr[-3000:]}"
        text = done.stdout
        flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))
        choices = {flag: set(values.split(",")) for flag, values in re.findall(r"(--[a-z][a-z0-9-]*) \{([^}]*)\}", text)}
        _HELP[program] = (flags, choices)
    return _HELP[program]


def tokens_of(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote in prose: check what splits
        return command.split()


def invocations(command: str, variables: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(program, arguments) of every documented CLI that a shell line calls."""
    found = []
    tokens = []
    for token in tokens_of(command):  # expand $NAME of variables set earlier in the block
        name = token[1:] if token.startswith("$") else None
        if name and name.strip("{}") in variables:
            tokens += tokens_of(variables[name.strip("{}")])
        else:
            tokens.append(token)
    for k, token in enumerate(tokens):
        program = None
        rest = k + 1
        if token in ("his-train", "his-evaluate", "his-benchmark"):
            program = token
        elif re.fullmatch(r"(\S*/)?python3?(\.\d+)?", token) and rest < len(tokens):
            target = tokens[rest]
            if target == "-m" and rest + 1 < len(tokens) and f"-m {tokens[rest + 1]}" in CLIS:
                program, rest = f"-m {tokens[rest + 1]}", rest + 2
            elif target in CLIS or re.fullmatch(r"benchmarks/bench_\w+\.py", target):
                program, rest = target, rest + 1
        if program is None:
            continue
        args = []
        for arg in tokens[rest:]:
            if arg in OPERATORS:
                break
            args.append(arg)
        found.append((program, args))
    return found


def check_arguments(program: str, args: list[str], check_values: bool) -> list[str]:
    flags, choices = program_help(program)
    problems = []
    for k, arg in enumerate(args):
        if not arg.startswith("--") or arg == "--":
            continue
        flag, _, inline_value = arg.partition("=")
        if flag not in flags:
            problems.append(f"{program}: {flag} is not in its --help")
            continue
        value = inline_value or (args[k + 1] if k + 1 < len(args) else "")
        if check_values and flag in choices and value and "$" not in value and value not in choices[flag]:
            problems.append(f"{program}: {flag} {value!r} is not one of {sorted(choices[flag])}")
    return problems


def shell_lines(code: str) -> tuple[list[str], dict[str, str]]:
    """Logical lines (continuations joined) and the simple VAR="..." assignments of a block."""
    text = re.sub(r"\\\n", " ", code)
    lines = [line for line in text.splitlines() if line.strip()]
    variables = {}
    for line in lines:
        match = re.match(r"^\s*(?:export\s+)?([A-Za-z_]\w*)=(.*)$", line)
        if match:
            try:
                parts = shlex.split(match.group(2))
            except ValueError:
                continue
            if len(parts) == 1:
                variables[match.group(1)] = parts[0]
    return lines, variables


@pytest.mark.parametrize("path", DOC_FILES, ids=[str(path.relative_to(ROOT)) for path in DOC_FILES])
def test_shell_examples_use_existing_flags(path: Path):
    blocks, spans, _ = PARSED[path]
    problems = []
    checked = 0
    for block in blocks:
        if block.lang not in SHELL_LANGS:
            continue
        lines, variables = shell_lines(block.code)
        for line in lines:
            for program, args in invocations(line, variables):
                checked += 1
                problems += [f"{block.where} ({line.strip()[:80]}...): {p}"
                             for p in check_arguments(program, args, check_values=True)]
    for line_number, span in spans:
        for program, args in invocations(span, {}):
            checked += 1
            problems += [f"{path.relative_to(ROOT)}:{line_number} (`{span[:80]}`): {p}"
                         for p in check_arguments(program, args, check_values=False)]
    assert not problems, "\n".join(problems)
    if path.name == "README.md":
        assert checked, "README.md names no train.py/evaluate.py/benchmark.py command"


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading (mkdocs' toc gives the same for these headings)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def heading_anchors(text: str) -> set:
    """The anchors of a Markdown page's headings: an explicit `{#id}` where given, else the slug."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M):
        explicit = re.search(r"\{#([\w-]+)\}$", heading)
        anchors.add(explicit.group(1) if explicit else github_slug(heading))
    return anchors


def test_readme_links_to_docs_resolve():
    """README.md is not part of the site (mkdocs build --strict checks the pages' own links), so its
    relative links are checked here: the file exists and, with #anchor, has a heading of that anchor."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(((?!https?:|#)[^)\s]+)\)", readme)
    assert any(link.startswith("docs/") for link in links), "the README links no docs page"
    problems = []
    for link in links:
        target, _, anchor = link.partition("#")
        path = ROOT / target
        if not path.exists():
            problems.append(f"{link}: no such file")
        elif anchor:
            if anchor not in heading_anchors(path.read_text(encoding="utf-8")):
                problems.append(f"{link}: {target} has no heading with the anchor #{anchor}")
    assert not problems, "\n".join(problems)


def test_anchors_between_and_within_the_docs_pages_resolve():
    """A link `#anchor` within a page, or `page.md#anchor` to another, names a heading there (a renamed
    heading leaves no dead link in a table the site builder does not check)."""
    texts = {path.name: path.read_text(encoding="utf-8") for path in (ROOT / "docs").glob("*.md")}
    anchors = {name: heading_anchors(text) for name, text in texts.items()}
    problems = []
    for name, text in texts.items():
        for target, anchor in re.findall(r"\]\(([\w.-]*\.md)?#([\w-]+)\)", text):
            page = target or name
            if page not in anchors:
                continue  # a page outside docs/ (the README checks its own links above)
            if anchor not in anchors[page]:
                problems.append(f"docs/{name}: ({target}#{anchor}): no heading with that anchor in {page}")
    assert not problems, "\n".join(problems)


def test_the_flag_checker_catches_a_wrong_flag():
    """The checker itself: a flag train.py lacks and a value outside --algo's choices are found."""
    lines, variables = shell_lines('GRID="--iterations 3 --no-such-flag"\npython train.py $GRID --algo qmix\n')
    found = [problem for line in lines for program, args in invocations(line, variables)
             for problem in check_arguments(program, args, check_values=True)]
    assert any("--no-such-flag" in problem for problem in found), found
    assert any("--algo 'qmix'" in problem for problem in found), found
    assert not any("--iterations" in problem for problem in found), found
