"""Core error messages worded for the command line and the widgets: the Python names in them
(``source=``, ``allow_float=True``, ``boundary_width``) become the flags, or the widget fields,
that do the same. One table for every command (``cli``, ``quality_cli``, ``training.cli``)."""

from __future__ import annotations

import re

#: What each ``--read-as`` value does, for every command's help.
READ_AS_HELP = ("auto (classes 0-2 or a colour palette), binary (0/1 or 0/255 objects, e.g. "
                "organelles, on unlabelled tissue), membrane (ISBI: white interior, black "
                "membrane), instances (one id per object)")

#: Python names in core error messages -> the flags that do the same on the command line.
_CLI_WORDING: tuple[tuple[str, str], ...] = (
    (r"coerce_mask\(mask, source='(\w+)', boundary_width=\.\.\.\)",
     r"--read-as \1 (and --boundary-width N)"),
    (r"coerce_mask\(mask, source='(\w+)'\)", r"--read-as \1"),
    (r"(?<![\w-])source='(\w+)'", r"--read-as \1"),
    (r"(?:use )?coerce_mask\(mask, allow_float=True\)", "use --allow-float"),
    (r"allow_float=True \(CLI: --allow-float\)", "--allow-float"),
    (r"allow_float=True", "--allow-float"),
    (r"convert it with --read-as", "read it with --read-as"),
    (r"convert it\s+with --read-as", "read it with --read-as"),
    (r" Pass tolerance=\.\.\. for slightly off colours\.",
     " Save the mask without lossy compression (TIFF or PNG)."),
    (r"\bboundary_width\b", "--boundary-width"),
    (r"\bblob_size\b", "--blob-size"),
    (r"\boverwrite=True\b", "--overwrite"),
)


def cli_message(message: str) -> str:
    """A core error message with its Python names replaced by this command's flags."""
    for pattern, repl in _CLI_WORDING:
        message = re.sub(pattern, repl, message)
    return message


def read_as_wording(message: str, field: str) -> str:
    """A mask error's advice as the widget field that does it: ``choose <field> 'binary'``.

    Reads the core's ``convert it with coerce_mask(mask, source='binary') or
    source='membrane'`` and the command line's ``read it with --read-as binary`` (a training
    child process words its errors for the command line).
    """
    def hint(m: re.Match[str]) -> str:
        return f"choose {field} " + " or ".join(f"'{n}'" for n in m.groups() if n)

    message = re.sub(r"(?:convert it with )?coerce_mask\(mask, source='(\w+)'"
                     r"(?:, boundary_width=\.\.\.)?\)(?: or source='(\w+)')?", hint, message)
    return re.sub(r"(?:read it with )?--read-as (\w+)(?: \(and --boundary-width N\))?"
                  r"(?: or --read-as (\w+))?", hint, message)
