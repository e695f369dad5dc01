"""The ``--help`` layout every command of this project shares: each option's default shown.

argparse's :class:`~argparse.ArgumentDefaultsHelpFormatter` also prints ``(default: None)``
for required options and a second default where the help text already states one; this one
shows a default only where it tells the user something.
"""

from __future__ import annotations

import argparse

__all__ = ["DefaultsHelpFormatter"]


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless X is None / False, the option is
    required, or the help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default in (None, False, argparse.SUPPRESS) or action.required or "default" in text
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"
