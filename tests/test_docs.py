"""The README and docs/ as a newcomer meets them: the README stays short, every relative link and image resolves (an
anchor to a heading of its page), and every documented `seqbench` command, flag and config key exists.

Commands are taken from the pages' fenced bash blocks and run in-process: `run` and `sweep` as a dry run (resolved and
validated like the real thing, nothing written), `list`, `--version` and `--help` as they are; the commands that would
do real work (`report`, `reproduce`, `bench`, `export`) are parsed only. Flags and config keys named in the prose are
checked against the parser and the config schema.
"""

from __future__ import annotations

import contextlib
import itertools
import importlib.util
import io
import re
import shlex
import sys
from pathlib import Path

import pytest

from seqbench.harness import trackers
from seqbench.harness.cli import build_parser, main
from seqbench.harness.config import describe_keys
from seqbench.harness.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 20_000  # bytes: a newcomer's page; the reference material lives in docs/

REFERENCE = ROOT / "results" / "reference" / "quick"  # committed: a real record for `<run_id>`
SPEC_PAGE = ROOT / "docs" / "sweeps.md"  # its YAML example is the `my_sweep.yaml` the commands name

# Programs other than seqbench that the bash blocks use: not run here, each listed on purpose.
OTHER_PROGRAMS = {
    "source": "activates the virtual environment",
    "pip": "installs packages (needs a network or the local wheel files)",
    ".venv/bin/pip": "installs packages into the virtual environment",
    "tensorboard": "the tensorboard viewer (pip install 'seqbench[tensorboard]')",
}
# Flags in the prose that belong to other programs, with the program.
OTHER_FLAGS = {
    "--index-url": "pip",
    "--logdir": "tensorboard",
    "--signal": "sbatch, set through submitit",
    "--head": "ray start",
    "--backend-store-uri": "mlflow ui",
}
# Dotted names in the prose that look like config keys but are attributes of the task object a plugin's build() gets.
TASK_ATTRIBUTES = {"task.input_kind", "task.input_size", "task.output_size", "task.seq_len"}


# --- reading the pages ---------------------------------------------------------------------------------------------

def split_page(text: str) -> tuple[list[tuple[int, str]], list[tuple[str, int, list[str]]]]:
    """(prose lines with their numbers, fenced blocks as (language, first line number, lines))."""
    prose, blocks, block = [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```(\w*)", line)
        if block is None and fence:
            block = (fence.group(1), number + 1, [])
        elif block is not None and fence:
            blocks.append(block)
            block = None
        elif block is not None:
            block[2].append(line)
        else:
            prose.append((number, line))
    assert block is None, f"a fenced block opened at line {block[1] - 1} is never closed"
    return prose, blocks


def inline_code(page: Path) -> list[tuple[int, str]]:
    """The `code spans` of a page's prose, with their line numbers."""
    prose, _ = split_page(page.read_text())
    return [(n, span) for n, line in prose for span in re.findall(r"`([^`]+)`", line)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    prose, _ = split_page(page.read_text())
    found, seen = set(), {}
    for _, line in prose:
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            found.add(f"{base}-{seen[base]}" if base in seen else base)  # a repeated heading: -1, -2, ...
            seen[base] = seen.get(base, 0) + 1
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """Every Markdown link and image target in a page's prose (not in code)."""
    prose, _ = split_page(page.read_text())
    found = []
    for number, line in prose:
        line = re.sub(r"`[^`]*`", "", line)
        found += [(number, target) for target in re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line)]
    return found


def bash_commands(page: Path) -> list[tuple[int, str, list[str]]]:
    """The commands of a page's bash blocks: (line, the block's cd target or '', argv), comments dropped,
    continuation lines joined, `&&`/`;`/`|` separating commands."""
    _, blocks = split_page(page.read_text())
    commands = []
    for language, first, lines in blocks:
        if language not in ("bash", "sh", "shell", "console"):
            continue
        cwd, joined, start = "", "", None
        for number, line in enumerate(lines, first):
            start = number if start is None else start
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            lexer = shlex.shlex(joined + line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            argv: list[str] = []
            for token in [*lexer, ";"]:
                if token in (";", "&&", "||", "|", "&"):
                    if argv and argv[0] == "cd":
                        cwd = argv[1]
                    elif argv:
                        commands.append((start, cwd, argv))
                    argv = []
                else:
                    argv.append(token)
            joined, start = "", None
    return commands


def documented_commands():
    for page in PAGES:
        for number, cwd, argv in bash_commands(page):
            yield pytest.param(page, cwd, argv, id=f"{page.relative_to(ROOT)}:{number}:{'-'.join(argv[:2])}")


def seqbench_flags() -> set[str]:
    """Every option string of `seqbench` and its subcommands (argparse keeps them in private attributes only)."""
    parser = build_parser()
    flags = set(parser._option_string_actions)
    for action in parser._subparsers._group_actions:
        for sub in action.choices.values():
            flags |= set(sub._option_string_actions)
    return flags


def compile_report_flags() -> set[str]:
    pytest.importorskip("triton")
    from seqbench.kernels import compile_report

    out = _capture(compile_report.main, ["--help"])
    return set(re.findall(r"(?<![\w-])--[a-z][\w-]*", out))


def _capture(func, argv) -> str:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
        func(argv)
    return buffer.getvalue()


def spec_example() -> str:
    """The sweep spec shown on docs/sweeps.md (the YAML block with a `name:`)."""
    _, blocks = split_page(SPEC_PAGE.read_text())
    specs = ["\n".join(lines) for language, _, lines in blocks if language == "yaml" and lines[0].startswith("name:")]
    assert len(specs) == 1, f"{SPEC_PAGE.name}: expected one YAML sweep spec, found {len(specs)}"
    return specs[0] + "\n"


# --- the tests -----------------------------------------------------------------------------------------------------

def test_the_readme_is_short():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size:,} bytes; keep it under {README_LIMIT:,} (move detail to docs/)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves(page):
    broken = []
    for number, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or ROOT not in (file, *file.parents):
            broken.append(f"line {number}: {target}: no such file in the repository")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            broken.append(f"line {number}: {target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_the_link_check_sees_a_broken_link_and_anchor(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# There\n\n## A heading, with `code`\n")
    page.write_text("[ok](there.md#a-heading-with-code) [gone](missing.md) ![img](there.md#nowhere)\n"
                    "`[not a link](missing.md)`\n```bash\n[also not](missing.md)\n```\n")
    assert links(page) == [(1, "there.md#a-heading-with-code"), (1, "missing.md"), (1, "there.md#nowhere")]
    assert "a-heading-with-code" in anchors(tmp_path / "there.md")
    assert "nowhere" not in anchors(tmp_path / "there.md")


@pytest.mark.parametrize("page, cwd, argv", list(documented_commands()))
def test_every_documented_command_is_valid(page, cwd, argv, tmp_path, monkeypatch, capsys):
    check_command(cwd, list(argv), tmp_path, monkeypatch, capsys)


def check_command(cwd: str, argv: list[str], tmp_path: Path, monkeypatch, capsys) -> None:
    """AssertionError unless the command is valid as documented; a skip where an optional package it needs is
    missing. `cwd` is where the block has `cd`-ed to, relative to the repository root."""
    env = {}
    while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):  # VAR=value before the program
        name, _, value = argv.pop(0).partition("=")
        env[name] = value
    program, args = argv[0], argv[1:]
    if program != "seqbench":
        check_other_program(program, args)
        return
    args = [placeholder(a, tmp_path) for a in args]
    monkeypatch.chdir(ROOT / cwd)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    command = args[0] if args else ""
    if command in ("run", "sweep") and "--help" not in args:
        check_dry_run(args, tmp_path / "out", capsys)
    elif command in ("list", "--version", "--help") or "--help" in args:
        code = main(args)
        assert code == 0, f"seqbench {shlex.join(args)} -> exit {code}: {capsys.readouterr().err}"
    else:  # report, reproduce, bench, export do real work: their command lines are parsed, their paths checked
        try:
            parsed = build_parser().parse_args(args)
        except ConfigError as e:  # what main turns into one line and exit code 2
            raise AssertionError(f"seqbench {shlex.join(args)}: {e}") from None
        for value in (getattr(parsed, "dir", None), getattr(parsed, "run_dir", None)):
            if value and Path(value).parts[:2] == ("results", "reference"):
                assert (ROOT / cwd / value).is_dir(), f"seqbench {command} {value}: no such committed folder"


def check_other_program(program: str, args: list[str]) -> None:
    if program == "make":
        targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
        unknown = [a for a in args if "=" not in a and not a.startswith("-") and a not in targets]
        assert not unknown, f"make {unknown}: no such target in the Makefile"
    elif program in ("python", "python3"):
        if args[:1] == ["-m"] and args[1].startswith("seqbench."):
            assert importlib.util.find_spec(args[1]) is not None, f"python -m {args[1]}: no such module"
            if args[1] == "seqbench.kernels.compile_report":
                unknown = {a.partition("=")[0] for a in args[2:] if a.startswith("--")} - compile_report_flags()
                assert not unknown, f"python -m {args[1]}: unknown flags {sorted(unknown)}"
    else:
        assert program in OTHER_PROGRAMS, (f"`{program}`: not a command this test knows; check it by hand and add it "
                                           "to OTHER_PROGRAMS with what it does")


def check_dry_run(args: list[str], out: Path, capsys) -> None:
    """`seqbench run` or `sweep` as documented, with its output folder moved to `out`, as a dry run: it must resolve
    and validate (keys, values, flags, spec) and write nothing."""
    for name in missing_trackers(args):
        pytest.skip(f"tracker {name} is not installed (pip install 'seqbench[{name}]')")
    if "--executor" in args and args[args.index("--executor") + 1] == "slurm" and not installed("submitit"):
        pytest.skip("submitit is not installed (pip install 'seqbench[slurm]')")
    if "--out" in args:
        args[args.index("--out") + 1] = str(out)
    else:
        args += ["--out", str(out)]
    args += [] if "--dry-run" in args else ["--dry-run"]
    with _plugins_forgotten():
        code = main(args)
    assert code == 0, f"seqbench {shlex.join(args)} -> exit {code}: {capsys.readouterr().err}"
    assert not out.exists(), "a dry run wrote into its --out"


def placeholder(arg: str, tmp_path: Path) -> str:
    """Fixtures for the placeholders the commands use: a committed run for `<run_id>`, the spec of docs/sweeps.md for
    `my_sweep.yaml`. Any other `<...>` fails, so that a new placeholder gets a fixture."""
    if "<run_id>" in arg:
        run_id = sorted(p.name for p in REFERENCE.iterdir() if (p / "summary.json").exists())[0]
        arg = arg.replace("<run_id>", run_id)
    if arg == "my_sweep.yaml":
        spec = tmp_path / "my_sweep.yaml"
        spec.write_text(spec_example())
        arg = str(spec)
    assert not re.search(r"<[^>]*>", arg), f"{arg}: a placeholder without a fixture in tests/test_docs.py"
    return arg


def missing_trackers(args: list[str]) -> list[str]:
    names = []
    for i, a in enumerate(args):
        if a == "--tracker":
            names += args[i + 1].split(",")
        elif a.startswith("tracker="):
            names += a.partition("=")[2].split(",")
    return [n for n in names if n in trackers.TRACKERS and not trackers.installed(n)]


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@contextlib.contextmanager
def _plugins_forgotten():
    """A plugin imported from an example's folder is dropped again, so that it does not outlive its test."""
    before = set(sys.modules)
    try:
        yield
    finally:
        for name in set(sys.modules) - before:
            if name.split(".")[0] == "byo_models":
                del sys.modules[name]


def test_the_command_reader_joins_lines_splits_commands_and_follows_cd(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\nseqbench run a=1 \\\n    --quiet   # comment\nseqbench --version; seqbench list\n"
                    "cd sub\nseqbench x && make y\n```\n```python\nseqbench = 1\n```\n")
    assert bash_commands(page) == [
        (2, "", ["seqbench", "run", "a=1", "--quiet"]), (4, "", ["seqbench", "--version"]),
        (4, "", ["seqbench", "list"]), (6, "sub", ["seqbench", "x"]), (6, "sub", ["make", "y"])]


@pytest.mark.parametrize("argv", [
    ["seqbench", "run", "task=copy", "model.no_such_key=1"],
    ["seqbench", "sweep", "quick", "--no-such-flag"],
    ["seqbench", "bench", "--cells", "nope"],
    ["seqbench", "reproduce", "results/reference/no-such-run"],
    ["seqbench", "report", "results/<sweep>"],
    ["make", "no-such-target"],
    ["curl", "example.org"],
], ids=["unknown-key", "unknown-flag", "bad-value", "missing-reference", "placeholder", "make-target", "program"])
def test_a_wrong_documented_command_fails(argv, tmp_path, monkeypatch, capsys):
    with pytest.raises(AssertionError):
        check_command("", list(argv), tmp_path, monkeypatch, capsys)


def test_every_flag_named_in_the_prose_exists():
    known = seqbench_flags() | compile_report_flags() | set(OTHER_FLAGS)
    unknown = [f"{page.relative_to(ROOT)}:{n}: {flag}" for page in PAGES for n, span in inline_code(page)
               for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", span) if flag not in known]
    assert not unknown, "flags that no seqbench command has:\n" + "\n".join(unknown)


def config_keys_in(span: str) -> list[str]:
    return re.findall(r"(?<![\w./-])((?:task|model|train|eval)\.[a-z_]+)", span)


def test_every_config_key_named_in_the_prose_exists():
    keys = {row.key for row in describe_keys()} | TASK_ATTRIBUTES
    unknown = [f"{page.relative_to(ROOT)}:{n}: {key}" for page in PAGES for n, span in inline_code(page)
               for key in config_keys_in(span) if key not in keys]
    assert not unknown, "config keys that do not exist (seqbench list):\n" + "\n".join(unknown)
    assert config_keys_in("`model.hidden=48`, seqbench.models, harness/train.py, model.<key>") == ["model.hidden"]


def test_the_configuration_page_lists_every_key():
    listed = {span.partition("=")[0] for _, span in inline_code(ROOT / "docs" / "configuration.md")}
    missing = sorted({row.key for row in describe_keys()} - listed)
    assert not missing, f"docs/configuration.md does not describe {missing} (seqbench list has them)"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / target.partition("#")[0]).resolve() for _, target in links(README)}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


# --- the README's numbers are the committed records' ---------------------------------------------------------------

def markdown_rows(lines: list[str]) -> list[dict[str, str]]:
    """The rows of the first Markdown table in `lines`, as header -> cell text."""
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = [line for line in itertools.takewhile(lambda l: l.startswith("|"), lines[start:])]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


def test_the_readme_table_is_the_committed_quick_reports_summary():
    lines = README.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| model | task | T | steps |"))
    shown = markdown_rows(lines[at:])
    summary = markdown_rows((REFERENCE / "report" / "tables" / "summary.md").read_text().splitlines())
    by_cell = {(row["model"], row["task"], row["T"]): row for row in summary}
    assert len(shown) == len(summary) == 16
    for row in shown:
        recorded = by_cell[(row["model"], row["task"], row["T"])]
        assert row == {column: recorded[column] for column in row}, row
