"""The documentation stays true: its links resolve and the commands it shows exist.

Every link and image in README.md and docs/*.md must point at a file of the repository (and a
heading, when it names one); every ``napari-synthgen ...`` command in their fenced code blocks
(also ``torchrun ... -m napari_synthgen ...``, ``srun``, ``xvfb-run``) must name a real
sub-command with only flags its parser has, and parse when it is a plain command rather than a
synopsis with ``[optional]`` parts. No GUI, no torch work: a fraction of a second.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from napari_synthgen import registry
from napari_synthgen.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
IMAGE_DIR = REPO / "docs" / "images"
MAX_IMAGE_BYTES = 300_000
#: 3.1 MB: pictures of EM texture at 1:1 (grain and repetition do not show when scaled)
MAX_IMAGES_BYTES = 3_100_000

#: programs that run the next words as a command (their own options are skipped)
WRAPPERS = {"torchrun", "srun", "xvfb-run", "nice", "time", "exec", "env", "sudo", "uv",
            "python", "python3", "mpirun", "bash"}
PLACEHOLDER = re.compile(r"^<?[A-Z][A-Z0-9_]*(\.\.\.)?>?$")
#: what a placeholder may stand for where the parser wants a number (first accepted wins)
NUMBERS = ("1", "512", "0.5")


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if REPO in path.parents else str(path)


# ---------------------------------------------------------------------------------- links
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
FENCE = re.compile(r"^\s*(```|~~~)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks (links in code are not links)."""
    out, inside = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            out.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    slugs: dict[str, int] = {}
    out = set()
    inside = False
    for line in md.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m and not inside:
            base = _slug(m.group(1))
            n = slugs.get(base, 0)
            slugs[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def link_problems(md: Path, repo: Path = REPO) -> list[str]:
    """Links of ``md`` that do not resolve to a file (or heading) of the repository."""
    text = _prose(md.read_text(encoding="utf-8"))
    problems = []
    for target in LINK.findall(text) + HTML_SRC.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto: ...
            continue
        path_part, _, anchor = target.partition("#")
        dest = (md.parent / path_part).resolve() if path_part else md
        where = f"{md.relative_to(repo)}: link {target!r}"
        if repo not in dest.parents:
            problems.append(f"{where} leaves the repository")
        elif not dest.exists():
            problems.append(f"{where}: {dest.relative_to(repo)} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            problems.append(f"{where}: no heading #{anchor} in {dest.relative_to(repo)}")
    return problems


def image_links(md: Path) -> list[Path]:
    """The repository files ``md`` shows as images."""
    text = _prose(md.read_text(encoding="utf-8"))
    targets = re.findall(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)", text) + re.findall(
        r"<img\b[^>]*?\bsrc=\"([^\"]+)\"", text, re.IGNORECASE)
    return [(md.parent / t).resolve() for t in targets if "://" not in t]


# ------------------------------------------------------------------------------- commands
@dataclass
class Command:
    """A ``napari-synthgen`` command found in a code block: where, and its arguments."""

    where: str
    args: list[str]
    text: str


SHELL_BLOCKS = ("", "bash", "sh", "shell", "console", "zsh")


def _code_blocks(text: str, langs: tuple[str, ...] = SHELL_BLOCKS
                 ) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every fenced shell code block (untagged ones included;
    ``text`` blocks, such as the generated --help pages, are not commands)."""
    blocks, current, start, lang = [], None, 0, ""
    for i, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            if current is None:
                current, start = [], i + 1
                lang = line.strip().lstrip("`~").strip().lower()
            else:
                if lang in langs:
                    blocks.append((start, current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _logical_lines(lines: list[str], first: int) -> list[tuple[int, str]]:
    """Lines joined at trailing backslashes, comments and prompts removed."""
    out: list[tuple[int, str]] = []
    buf, start = "", first
    for i, line in enumerate(lines, first):
        if not buf:
            start = i
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        out.append((start, buf))
        buf = ""
    if buf:
        out.append((start, buf))
    return out


def _split(line: str) -> list[list[str]]:
    """Shell words of ``line`` (comments dropped), cut at ``&&``, ``||``, ``;`` and ``|``."""
    line = re.sub(r"^\s*[$>]\s+", "", line)
    try:
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lex.whitespace_split = True
        lex.commenters = "#"
        words = list(lex)
    except ValueError:  # unbalanced quotes: not shell
        return []
    parts: list[list[str]] = [[]]
    for w in words:
        if w in ("&&", "||", ";", "|", "&"):
            parts.append([])
        else:
            parts[-1].append(w)
    return [p for p in parts if p]


def _synopsis_split(line: str) -> list[str]:
    """Words of a synopsis line, keeping ``a|b`` alternatives inside one word."""
    line = re.sub(r"^\s*[$>]\s+", "", line)
    line = re.sub(r"\s#.*$", "", line)
    return line.split()


def _napari_args(words: list[str]) -> list[str] | None:
    """The arguments after ``napari-synthgen`` (or ``-m napari_synthgen``) when ``words``
    runs it as a command; None when it does not."""
    i = 0
    while i < len(words) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[i]):
        i += 1  # VAR=value prefixes
    if i >= len(words):
        return None
    head = Path(words[i]).name
    if head == "napari-synthgen":
        return words[i + 1:]
    if head not in WRAPPERS and not re.match(r"^python3?(\.\d+)?$", head):
        return None
    for j in range(i, len(words)):
        if Path(words[j]).name == "napari-synthgen":
            return words[j + 1:]
        if words[j] == "-m" and j + 1 < len(words) and words[j + 1] == "napari_synthgen":
            return words[j + 2:]
    return None


def doc_commands(md: Path) -> list[Command]:
    """Every napari-synthgen command in the fenced code blocks of ``md``."""
    commands = []
    for first, lines in _code_blocks(md.read_text(encoding="utf-8")):
        for lineno, line in _logical_lines(lines, first):
            synopsis = bool(re.search(r"\[--?\w|\w\|\w|\.\.\.\]", line))
            segments = [_synopsis_split(line)] if synopsis else _split(line)
            for words in segments:
                args = _napari_args(words)
                if args is not None:
                    commands.append(Command(f"{_rel(md)}:{lineno}", args, line.strip()))
    return commands


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("build_parser() has no sub-commands")


def _family_flags() -> dict[str, set[str]]:
    """flag -> the families whose settings it belongs to (train options of one family)."""
    owners: dict[str, set[str]] = {}
    for name in registry.names():
        for opt in registry.get(name).cli_options:
            owners.setdefault(opt.flag, set()).add(name)
    return owners


def _train_family(args: list[str]) -> str | None:
    """The family a ``train`` command trains (None when a config file may say)."""
    from napari_synthgen.families.diffusion import UNET_CONFIGS

    def value(flag: str) -> str | None:
        for k, w in enumerate(args):
            if w == flag and k + 1 < len(args):
                return args[k + 1]
            if w.startswith(flag + "="):
                return w.split("=", 1)[1]
        return None

    family, config = value("--family"), value("--config")
    if family is not None:
        return family
    if config in UNET_CONFIGS or value("--unet-config") is not None:
        return "diffusion"
    if config is not None or "--resume" in args:
        return None  # the configuration file or the run being resumed decides
    return "pix2pix"


class _Refused(Exception):
    pass


def _quiet(parser: argparse.ArgumentParser) -> None:
    def error(message: str) -> None:
        raise _Refused(message)

    parser.error = error  # type: ignore[method-assign]
    for sub in _subparsers_or_none(parser).values():
        sub.error = error  # type: ignore[method-assign]


def _subparsers_or_none(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    try:
        return _subparsers(parser)
    except AssertionError:
        return {}


def _fill_placeholders(sub: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """``--n N`` -> ``--n 1``: a placeholder where the parser wants a number."""
    out = list(args)
    actions = sub._option_string_actions
    for k, word in enumerate(out[:-1]):
        action = actions.get(word)
        if action is None or action.nargs == 0:
            continue
        wants_text = action.type in (None, str, Path) and not action.choices
        count = action.nargs if isinstance(action.nargs, int) else 1
        for m in range(k + 1, min(k + 1 + count, len(out))):
            if PLACEHOLDER.match(out[m]) and not wants_text:
                out[m] = _a_number(action)
    return out


def _a_number(action: argparse.Action) -> str:
    """A value the option's type accepts, standing in for a placeholder such as N."""
    for text in (*(str(c) for c in action.choices or ()), *NUMBERS):
        try:
            action.type(text) if callable(action.type) else None
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            continue
        return text
    return NUMBERS[0]


def command_problems(cmd: Command, parser: argparse.ArgumentParser) -> list[str]:
    """What is wrong with one documented command (empty when it is right)."""
    where = f"{cmd.where}: `{cmd.text}`"
    subs = _subparsers(parser)
    words = [w for w in cmd.args if w not in ("[", "]")]
    if not words or words[0] in ("-h", "--help", "--version"):
        return []
    name = words[0]
    if name not in subs:
        return [f"{where}: no sub-command {name!r} (known: {', '.join(subs)})"]
    sub = subs[name]
    known = set(sub._option_string_actions)
    synopsis = any(re.search(r"\[|\||\.\.\.", w) for w in cmd.args[1:])
    problems = []
    flags = []
    for w in words[1:]:
        for flag in re.findall(r"(?:^|\[)(--?[A-Za-z][\w-]*)", w):
            flags.append(flag)
            if flag not in known:
                problems.append(f"{where}: `{name}` has no option {flag}")
    if name == "train":
        family = _train_family([w.strip("[]") for w in words[1:]])
        if family is not None and family not in registry.names():
            problems.append(f"{where}: no model family {family!r}")
        elif family is not None:
            owners = _family_flags()
            for flag in flags:
                if flag in owners and family not in owners[flag]:
                    problems.append(f"{where}: {flag} is a {'/'.join(sorted(owners[flag]))} "
                                    f"option, but this trains {family}")
    if problems or synopsis:
        return problems
    if any("$" in w for w in words):
        return []  # shell variables: the flags were checked, the values cannot be
    try:
        parser.parse_args(_fill_placeholders(sub, words[:1]) + _fill_placeholders(sub, words[1:]))
    except _Refused as exc:
        problems.append(f"{where}: refused by the parser: {exc}")
    except SystemExit:  # --help and the like
        pass
    return problems


# ---------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    p = build_parser()
    _quiet(p)
    return p


@pytest.mark.parametrize("md", DOCS, ids=_rel)
def test_links_resolve(md: Path) -> None:
    assert link_problems(md) == []


def test_docs_show_commands() -> None:
    """The README and the guides show commands (so the command check checks something)."""
    found = {c.args[0] for md in DOCS for c in doc_commands(md) if c.args}
    assert {"generate", "train", "masks"} <= found, found


@pytest.mark.parametrize("md", DOCS, ids=_rel)
def test_commands_exist_with_their_flags(md: Path, parser: argparse.ArgumentParser) -> None:
    problems = [p for cmd in doc_commands(md) for p in command_problems(cmd, parser)]
    assert problems == [], "\n".join(problems)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("md", DOCS, ids=_rel)
def test_shell_blocks_are_valid_bash(md: Path) -> None:
    """Every ``bash``/``sh`` code block parses as bash (``bash -n``): a SLURM script can be
    copied as it is."""
    for first, lines in _code_blocks(md.read_text(encoding="utf-8"), ("bash", "sh", "shell")):
        proc = subprocess.run(["bash", "-n"], input="\n".join(lines) + "\n", text=True,
                              capture_output=True)
        assert proc.returncode == 0, f"{_rel(md)}:{first}: {proc.stderr}"


def _make_docs() -> Any:
    """scripts/make_docs.py as a module (its import loads no napari and no torch)."""
    spec = importlib.util.spec_from_file_location("make_docs", REPO / "scripts" / "make_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_current() -> None:
    """docs/cli.md is the parser's --help, as scripts/make_docs.py writes it."""
    current = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert current == _make_docs().cli_reference(), (
        "docs/cli.md is out of date with the parser: run `python scripts/make_docs.py --cli` "
        "(or make docs)")


def test_images_are_small_and_made_by_make_docs() -> None:
    """Every image the docs show is in docs/images/, small, and regenerated by make docs."""
    make_docs = _make_docs()
    shown = {p for md in DOCS for p in image_links(md)}
    for path in shown:
        assert path.parent == IMAGE_DIR, f"{_rel(path)}: keep the docs' images in docs/images/"
        if path.name in make_docs.RESULTS:  # a long run's figure: its scripts must exist
            assert all((REPO / script).is_file() for script in make_docs.RESULTS[path.name])
        else:
            assert path.name in make_docs.IMAGES, \
                f"{path.name} is not made by scripts/make_docs.py"
        assert path.stat().st_size <= MAX_IMAGE_BYTES, f"{_rel(path)} is over 300 KB"
    total = sum(p.stat().st_size for p in IMAGE_DIR.glob("*") if p.is_file())
    assert total <= MAX_IMAGES_BYTES, f"docs/images/ holds {total} bytes (budget 3.1 MB)"


# ------------------------------------------------------------------- the checker itself
def test_checker_catches_a_wrong_flag_a_wrong_family_and_a_missing_file(
        tmp_path: Path, parser: argparse.ArgumentParser) -> None:
    bad = [
        Command("x:1", ["generate", "--model", "demo", "--masks", "M", "--out", "O",
                        "--variation", "2"], "generate --variation"),
        Command("x:2", ["train", "--family", "diffusion", "--data", "D", "--netG",
                        "unet_256"], "train diffusion --netG"),
        Command("x:3", ["segment", "--in", "X"], "segment"),
        Command("x:4", ["masks", "--layout", "dense", "--n", "N", "--out", "O", "--size",
                        "512"], "masks --size 512"),
    ]
    good = [
        Command("y:1", ["masks", "--layout", "dense", "--n", "N", "--size", "H", "W",
                        "--out", "MASKS"], "masks N"),
        Command("y:2", ["train", "--family", "diffusion", "--data", "D", "--unet-config",
                        "small", "--steps", "STEPS"], "train diffusion"),
        Command("y:3", ["train", "--data", "DATA", "[DATA", "...]", "[--gan-mode",
                        "lsgan|vanilla|hinge]"], "synopsis"),
    ]
    for cmd in bad:
        assert command_problems(cmd, parser), cmd.text
    for cmd in good:
        assert command_problems(cmd, parser) == [], cmd.text
    text = ("```bash\nHF_HUB_OFFLINE=1 torchrun --nnodes 2 --nproc_per_node 4 \\\n"
            "    -m napari_synthgen train --data D --out R  # comment\n"
            "srun xvfb-run -a napari-synthgen demo --screenshot x.png && echo done\n```\n"
            "![shot](images/nowhere.png) [guide](guide.md#no-such-heading)\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Masks and layouts\n")
    probe = tmp_path / "docs" / "probe.md"
    probe.write_text(text + "[ok](guide.md#masks-and-layouts) [up](../docs/guide.md)\n")
    cmds = doc_commands(probe)
    assert [c.args[:1] for c in cmds] == [["train"], ["demo"]]
    assert cmds[0].args[-1] == "R"
    problems = link_problems(probe, repo=tmp_path)
    assert len(problems) == 2, problems
    assert any("nowhere.png" in p for p in problems)
    assert any("no-such-heading" in p for p in problems)
