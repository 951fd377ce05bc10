"""The settings as people meet them, generated from :mod:`trackerd.settings`' declarations:
argparse flags, the ``--help`` list of environment variables, and docs/operations.md's options
table; and :class:`Parser`, the argument parser of ``trackerd`` and its subcommands.

``python -m trackerd.options`` prints the table; ``--write docs/operations.md`` replaces the
table between that file's marker comments, and ``tests/test_options.py`` fails while the two
differ.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

from trackerd.settings import Option, options

START: Final = (
    "<!-- options:start: generated, python -m trackerd.options --write docs/operations.md -->"
)
END: Final = "<!-- options:end -->"
WIDTH: Final = 96
"""Where the ``--help`` epilog wraps (argparse wraps the flags' help itself)."""


UNRECOGNISED: Final = "unrecognized arguments: "
"""How argparse's error about unknown arguments starts (its own spelling)."""


class Parser(argparse.ArgumentParser):
    """An argument parser that answers a mistyped flag with the flags it may have meant:
    ``unrecognized arguments: --prot 5 (--prot: did you mean --port?)``, exit status 2 as
    before. Python 3.14's ``suggest_on_error`` is asked for too where it exists, though it
    covers choices, not unknown flags; this is for 3.11."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if sys.version_info >= (3, 14):
            kwargs.setdefault("suggest_on_error", True)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if message.startswith(UNRECOGNISED):
            hints = [h for word in message[len(UNRECOGNISED) :].split() if (h := self._hint(word))]
            if hints:
                message += f" ({'; '.join(hints)})"
        super().error(message)

    def _hint(self, word: str) -> str:
        """``--prot: did you mean --port?``, or "" for a word that is no flag or like none."""
        flag = word.partition("=")[0]
        if not flag.startswith("--"):
            return ""
        known = [f for f in self._option_string_actions if f.startswith("--")]
        close = difflib.get_close_matches(flag, known, n=2, cutoff=0.75)
        return f"{flag}: did you mean {' or '.join(close)}?" if close else ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A flag per setting that has one; ``dest`` is the field's name and an absent flag is
    ``None``, which :meth:`Settings.load` reads as "not given"."""
    for o in options():
        if o.flag is None:
            continue
        parser.add_argument(
            o.flag,
            dest=o.name,
            type=_parse(o),
            choices=o.choices or None,
            help=f"{o.help} (default {o.shown_default}; environment {o.env})".replace("%", "%%"),
        )


def _parse(o: Option) -> Callable[[str], object]:
    """argparse's ``type``: the field's kind, and a choice in any case as the choice."""
    return o.normalise if o.choices else o.kind


def environment_help() -> str:
    """The ``--help`` epilog's paragraphs on the environment."""
    every = options()
    flagged = ", ".join(o.env for o in every if o.flag is not None)
    text = [
        textwrap.fill(
            f"Every option can also be set in the environment: {flagged}. Flags win.", WIDTH
        )
    ]
    for o in every:
        if o.flag is None:
            intro = f"{o.env}, from the environment only (a flag would show in the process list):"
            text.append(textwrap.fill(f"{intro} {o.help}.", WIDTH))
    return "\n\n".join(text)


def markdown_table() -> str:
    """docs/operations.md's options table, one row per setting, in declaration order."""
    rows = ["| option | environment | default | meaning |", "|---|---|---|---|"]
    for o in options():
        flag = f"`{o.flag}`" if o.flag else ""
        default = f"`{o.shown_default}`" if o.literal else _escape(o.shown_default)
        meaning = _escape(o.help)
        if o.choices:
            meaning += f" ({', '.join(f'`{c}`' for c in o.choices)})"
        if o.flag is None:
            meaning += " (environment only: a flag would show in the process list)"
        cells = (flag, f"`{o.env}`", default, meaning)
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _escape(text: str) -> str:
    """Plain help text as Markdown: ``<token>`` would otherwise vanish as an HTML tag, ``*``
    start emphasis and ``|`` end the cell."""
    return text.translate({ord(c): "\\" + c for c in "|<>*"})


def with_table(readme: str) -> str:
    """``readme`` with the text between the markers replaced by :func:`markdown_table`."""
    head, found, rest = readme.partition(START + "\n")
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise ValueError(f"the markers {START!r} and {END!r} are not both there")
    return f"{head}{START}\n{markdown_table()}{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trackerd.options", description="Print or write the options table."
    )
    parser.add_argument("--write", metavar="DOC", help="replace the table in this file")
    args = parser.parse_args(argv)
    if args.write is None:
        sys.stdout.write(markdown_table())
        return 0
    path = Path(args.write)
    path.write_text(with_table(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
