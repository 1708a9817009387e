"""The emulator's own reading of a batch script, as sbatch documents it (independent of the adapter).

sbatch takes options from ``#SBATCH`` lines "before any executable commands in the script" and
stops at "the first non-comment non-whitespace line". Each line is split like a shell word list
(quotes group, ``#`` after whitespace starts a comment); options are read like ``getopt_long``:
``--name=value``, ``--name value``, ``-Xvalue`` or ``-X value``, where the options that take no
value come from the sbatch manual. The emulator needs the name, output/error files, working
directory and time limit; every option is returned by its long name.
"""

from __future__ import annotations

import re
import shlex

#: Short options of sbatch(1) by their long names.
SHORT_OPTIONS = {
    "A": "account",
    "a": "array",
    "b": "begin",
    "C": "constraint",
    "c": "cpus-per-task",
    "D": "chdir",
    "d": "dependency",
    "e": "error",
    "G": "gpus",
    "H": "hold",
    "i": "input",
    "J": "job-name",
    "k": "no-kill",
    "L": "licenses",
    "M": "clusters",
    "m": "distribution",
    "N": "nodes",
    "n": "ntasks",
    "O": "overcommit",
    "o": "output",
    "p": "partition",
    "Q": "quiet",
    "q": "qos",
    "S": "core-spec",
    "s": "oversubscribe",
    "t": "time",
    "W": "wait",
    "w": "nodelist",
    "x": "exclude",
}
#: Options that take no value (``--exclusive`` takes an optional one, only in ``=`` form).
FLAGS = frozenset(
    {
        "contiguous",
        "exclusive",
        "hold",
        "ignore-pbs",
        "no-kill",
        "no-requeue",
        "overcommit",
        "oversubscribe",
        "parsable",
        "quiet",
        "requeue",
        "spread-job",
        "test-only",
        "use-min-nodes",
        "wait",
    }
)
_DIRECTIVE = re.compile(r"#SBATCH(\s|$)")


class ScriptError(ValueError):
    """sbatch would refuse the script; the message reads like sbatch's."""


def header_lines(script: str) -> list[str]:
    """The lines sbatch reads directives from: after ``#!``, up to the first command."""
    lines = script.splitlines()
    if not lines or not lines[0].startswith("#!"):
        raise ScriptError(
            "sbatch: error: This does not look like a batch script.  The first\n"
            "sbatch: error: line must start with #! followed by the path to an interpreter."
        )
    header = []
    for line in lines[1:]:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        header.append(line)  # a directive must start the line (no indentation)
    return header


def directives(script: str) -> dict[str, str]:
    """The script's ``#SBATCH`` options by long name (flags map to ``""``); later ones win."""
    options: dict[str, str] = {}
    for line in header_lines(script):
        if not _DIRECTIVE.match(line):
            continue
        try:
            words = shlex.split(line[len("#SBATCH") :], comments=True)
        except ValueError as exc:
            raise ScriptError(f"sbatch: error: cannot parse directive {line!r}: {exc}") from None
        _read_options(words, options)
    return options


def _read_options(words: list[str], options: dict[str, str]) -> None:
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
        elif word.startswith("-") and len(word) > 1:
            name, value = SHORT_OPTIONS.get(word[1], word[1]), word[2:]
            eq = "=" if value else ""
        else:
            raise ScriptError(f"sbatch: error: unexpected argument {word!r} in an #SBATCH line")
        if not eq and name not in FLAGS:
            if i >= len(words):
                raise ScriptError(f"sbatch: option '--{name}' requires an argument")
            value = words[i]
            i += 1
        options[name] = value
