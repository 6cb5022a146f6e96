"""The documentation stays true to the code: every ``botnet`` command line in README.md and
docs/*.md parses, and every relative link and image points to a file (and heading) that exists.

Command lines are taken from shell code blocks (```bash, ```sh, ```shell, ```console and
unlabelled ```) and from inline code spans, in the forms ``botnet ...``, ``python -m botnet ...``
and ``torchrun ... -m botnet ...`` (after ``VAR=value`` prefixes and ``time``). Each is only
parsed, with ``botnet.cli.build_parser().parse_args``: nothing runs. An inline span that only
names a command (``botnet eval``) is checked to be a command; it is not parsed, since its
required flags are left out on purpose.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from botnet.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}

# Command lines in the docs that are deliberately not parsed, each with its reason. Keep this
# short: a usage line with placeholders is better rewritten as a real example.
SKIPPED: dict[str, str] = {}

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
INLINE_CODE = re.compile(r"(?<!`)(?P<ticks>`+)(?!`)(?P<code>.+?)(?<!`)(?P=ticks)(?!`)", re.DOTALL)
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# botnet, torchrun or python, bare or from a bin/ folder (.venv/bin/botnet); not ~/.cache/botnet
PROGRAM = re.compile(r"^(?:(?:\S*/)?bin/)?(?P<name>botnet|torchrun|python(?:\d+(?:\.\d+)?)?)$")


@dataclass(frozen=True)
class Command:
    page: Path
    line: int
    text: str

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def split_markdown(text: str) -> tuple[list[tuple[str, int, list[str]]], list[tuple[int, str]]]:
    """The fenced blocks (language, first line number, lines) and the prose lines outside them."""
    blocks: list[tuple[str, int, list[str]]] = []
    prose: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        fence, lang, start = match["fence"], match["lang"].lower(), i + 2
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        blocks.append((lang, start, body))
        i += 1  # the closing fence
    return blocks, prose


def paragraphs(prose: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Prose joined into paragraphs (first line number, text): inline code may wrap across lines."""
    result, current, first = [], [], 0
    for number, line in prose + [(0, "")]:
        if line.strip():
            if not current:
                first = number
            current.append(line)
        elif current:
            result.append((first, "\n".join(current)))
            current = []
    return result


def strip_inline_code(text: str) -> str:
    return INLINE_CODE.sub("", text)


def botnet_argv(text: str) -> list[str] | None:
    """The arguments a command line gives botnet, or None when it does not run botnet.

    ``shlex`` splits the line as a POSIX shell would, dropping ``# comments``."""
    words = text.split()
    i = 0
    while i < len(words) and ENV_ASSIGNMENT.match(words[i]):
        i += 1
    if i < len(words) and words[i] in ("time", "/usr/bin/time"):
        i += 1
        while i < len(words) and words[i].startswith("-"):
            i += 1
    if i >= len(words):
        return None
    match = PROGRAM.match(words[i])
    if not match:
        return None
    program = match["name"]
    tokens = shlex.split(text, comments=True)  # a botnet line with unbalanced quotes fails here, loudly
    start = next(j for j, token in enumerate(tokens) if token == words[i])
    rest = tokens[start + 1 :]
    if program == "botnet":
        return rest
    for j in range(len(rest) - 1):  # python -m botnet ..., torchrun [its flags] -m botnet ...
        if rest[j] == "-m" and rest[j + 1] == "botnet":
            return rest[j + 2 :]
    return None


def logical_lines(lines: list[str], first: int) -> list[tuple[int, str]]:
    """Shell lines with backslash continuations joined, each with the number of its first line."""
    result, pending, start = [], "", first
    for offset, line in enumerate(lines):
        if not pending:
            start = first + offset
            line = re.sub(r"^\s*\$\s+", "", line)  # a console prompt
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        result.append((start, pending + line))
        pending = ""
    if pending:
        result.append((start, pending))
    return result


def commands_in(page: Path) -> list[Command]:
    blocks, prose = split_markdown(page.read_text(encoding="utf-8"))
    found = []
    for lang, first, body in blocks:
        if lang in SHELL_LANGUAGES:
            for number, line in logical_lines(body, first):
                if botnet_argv(line) is not None:
                    found.append(Command(page, number, line.strip()))
    for first, paragraph in paragraphs(prose):
        for match in INLINE_CODE.finditer(paragraph):
            code = " ".join(match["code"].split())
            if botnet_argv(code) is not None:
                number = first + paragraph[: match.start()].count("\n")
                found.append(Command(page, number, code))
    return found


COMMANDS = [command for page in PAGES for command in commands_in(page)]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def names_a_command(argv: list[str]) -> bool:
    """Whether argv is only (sub)command names, such as ``eval`` or ``detect train``."""
    parser = build_parser()
    for word in argv:
        choices = subcommands(parser)
        if word not in choices:
            return False
        parser = choices[word]
    return True


def parse(argv: list[str]) -> str | None:
    """argparse's complaint about argv, or None when it parses. Nothing is run."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as stop:
        if stop.code in (0, None) and ("-h" in argv or "--help" in argv):
            return None
        return stderr.getvalue().strip() or f"exit status {stop.code}"
    return None


def test_the_docs_have_command_lines():
    # Guards the extraction itself: the README's tour and the pages hold dozens of commands.
    assert len(COMMANDS) >= 60, [c.where() for c in COMMANDS]
    pages = {command.page.name for command in COMMANDS}
    assert {"README.md", "training.md", "detection.md", "benchmarks.md"} <= pages


def test_skipped_lines_are_still_in_the_docs():
    texts = {command.text for command in COMMANDS}
    assert set(SKIPPED) <= texts, set(SKIPPED) - texts


@pytest.mark.parametrize("command", COMMANDS, ids=[command.where() for command in COMMANDS])
def test_command_line_parses(command: Command):
    if command.text in SKIPPED:
        pytest.skip(SKIPPED[command.text])
    argv = botnet_argv(command.text)
    assert argv is not None
    problem = parse(argv)
    if problem is not None and names_a_command(argv):
        return  # `botnet eval` in prose names the command; its flags are left out on purpose
    assert problem is None, f"{command.where()}: `{command.text}` does not parse: {problem}"


# ---------------------------------------------------------------- the extraction itself


def test_extraction_forms(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Run `botnet train --data DIR\n--epochs 3` or `python -m botnet list`; not `botnet.create_model()`.\n"
        "\n"
        "```bash\n"
        "torchrun --nproc_per_node 2 -m botnet train \\\n"
        "    --amp   # a comment\n"
        "PATH=.venv/bin:$PATH botnet bench --suite mhsa\n"
        ".venv/bin/python -m botnet info botnet50\n"
        "ls ~/.cache/botnet\n"
        "~/.cache/botnet\n"
        "python benchmarks/defaults.py\n"
        "make test\n"
        "```\n"
        "\n"
        "```python\n"
        "botnet list\n"
        "```\n",
        encoding="utf-8",
    )
    found = commands_in(page)
    assert [botnet_argv(c.text) for c in found] == [
        ["train", "--amp"],
        ["bench", "--suite", "mhsa"],
        ["info", "botnet50"],
        ["train", "--data", "DIR", "--epochs", "3"],
        ["list"],
    ]
    assert [c.line for c in found] == [5, 7, 8, 1, 2]


def test_a_bad_flag_is_caught():
    assert parse(["train", "--no-such-flag"]) is not None
    assert parse(["eval"]) is not None and names_a_command(["eval"])
    assert not names_a_command(["eval", "--json"])
    assert parse(["train", "--epochs", "3"]) is None


# ---------------------------------------------------------------- links


LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?(?P<target>[^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(?P<target>\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
HTML_SOURCE = re.compile(r"<(?:img|a)\s[^>]*(?:src|href)=\"(?P<target>[^\"]+)\"", re.IGNORECASE)
HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    _, prose = split_markdown(page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose:
        match = HEADING.match(line)
        if not match:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match["title"])  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links_in(page: Path) -> list[tuple[int, str]]:
    _, prose = split_markdown(page.read_text(encoding="utf-8"))
    found = []
    for first, paragraph in paragraphs(prose):
        text = strip_inline_code(paragraph)
        for pattern in (LINK, REFERENCE, HTML_SOURCE):
            for match in pattern.finditer(text):
                found.append((first + text[: match.start()].count("\n"), match["target"]))
    return found


LINKS = [(page, line, target) for page in PAGES for line, target in links_in(page)]


def test_the_docs_have_links():
    assert len(LINKS) >= 20
    for page in PAGES[1:]:
        assert page.relative_to(ROOT).as_posix() in {
            (ROOT / target.partition("#")[0]).relative_to(ROOT).as_posix()
            for p, _, target in LINKS
            if p.name == "README.md"
        }, f"README.md does not link to {page.relative_to(ROOT)}"


@pytest.mark.parametrize(
    ("page", "line", "target"), LINKS, ids=[f"{p.relative_to(ROOT)}:{n}:{t}" for p, n, t in LINKS]
)
def test_relative_link_resolves(page: Path, line: int, target: str):
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
        return
    path, _, fragment = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    where = f"{page.relative_to(ROOT)}:{line}"
    assert file.exists(), f"{where}: {target} points to {file}, which does not exist"
    assert file.is_relative_to(ROOT), f"{where}: {target} points outside the repository"
    if fragment and file.suffix == ".md":
        assert fragment in anchors(file), f"{where}: {target}: no heading #{fragment} in {file.name}"


def test_every_page_says_who_it_is_for():
    for page in PAGES[1:]:
        lines = [line for line in page.read_text(encoding="utf-8").splitlines() if line.strip()]
        assert lines[0].startswith("# "), page.name
        assert lines[1].startswith("For "), f"{page.name}: the line after the title says who the page is for"
        assert "Contents:" in lines[:6] or any(line.startswith("- [") for line in lines[2:8]), page.name


def test_the_docs_stand_alone():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for word in ("../shared", "SPEC"):
            assert word not in text, f"{page.relative_to(ROOT)} mentions {word}"
        assert not re.search(r"(?i)\bissues?\s*#?\d+|(?<![\w&])#\d+\b", text), (
            f"{page.relative_to(ROOT)} mentions an issue number"
        )
