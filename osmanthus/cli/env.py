"""OSMANTHUS_* environment variables as a second source of the servers' options (containers)."""

from __future__ import annotations

import argparse
import copy
import os
from collections.abc import Iterable
from typing import Any, TypeVar, overload

_N = TypeVar("_N")

PREFIX = "OSMANTHUS_"
#: the attribute naming an option's variable; the help formatter shows it as [env: NAME]
ENV_ATTR = "env_var"
#: between the values of a repeatable option in one variable: file and certificate names hold none
SEPARATOR = ","
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})

ENV_EPILOG = """\
environment:
  Every option can also be given as an environment variable: OSMANTHUS_ and the option's name in
  capitals with '-' as '_', shown as [env: ...] above. An option on the command line wins over its
  variable, and an empty variable counts as unset. A repeatable option's variable is a
  comma-separated list (a.pub,b.pub); a flag's is 1, true or yes (on) or 0, false or no (off).
  A bad value stops the command with exit 2, naming the variable.
"""


def env_var_name(action: argparse.Action) -> str:
    """OSMANTHUS_ and the long option name in capitals, - as _: --state-dir: OSMANTHUS_STATE_DIR."""
    long_name = max(action.option_strings, key=len)
    return PREFIX + long_name.lstrip("-").upper().replace("-", "_")


def read_environment(parser: argparse.ArgumentParser, *, note: bool = True) -> None:
    """Let every option of `parser` be given as an OSMANTHUS_* variable too (parsers of `Parser`).

    With `note`, the epilog under the command's help explains the variables.
    """
    for action in parser._actions:
        if _can_read(action):
            setattr(action, ENV_ATTR, env_var_name(action))
    if note:
        parser.epilog = ENV_EPILOG + "\n" + (parser.epilog or "")


def _can_read(action: argparse.Action) -> bool:
    if not action.option_strings or action.help == argparse.SUPPRESS:
        return False
    return not isinstance(action, argparse._HelpAction | argparse._VersionAction)


class _NotGiven:
    """The default of an option while finding out which options the command line gave."""


#: what a flag's variable set off (0, false, no) gives: as if the variable were unset
_OFF = object()


class Parser(argparse.ArgumentParser):
    """An argument parser that takes an option missing from the command line from its variable.

    Only options marked by `read_environment` read a variable. A required option whose variable
    is set is not required on the command line. A value on the command line wins; for options
    that exclude each other, any of them on the command line sets aside all their variables.
    """

    @overload
    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: None = None
    ) -> tuple[argparse.Namespace, list[str]]: ...

    @overload
    def parse_known_args(
        self, args: Iterable[str] | None, namespace: _N
    ) -> tuple[_N, list[str]]: ...

    @overload
    def parse_known_args(self, *, namespace: _N) -> tuple[_N, list[str]]: ...

    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        """Parse the command line, then fill each option it did not give from its variable."""
        readable = [action for action in self._actions if getattr(action, ENV_ATTR, None)]
        variables = {
            action: (name, raw)
            for action in readable
            if (raw := os.environ.get(name := getattr(action, ENV_ATTR), ""))
        }
        if not variables:
            return super().parse_known_args(args, namespace)
        arg_list = list(args) if args is not None else None
        probe = copy.copy(namespace)
        required = {action: action.required for action in variables}
        try:
            for action in variables:
                action.required = False
            # the real parse first, with the real defaults: --help shows them, and errors in the
            # command line itself are reported as usual
            parsed, rest = super().parse_known_args(arg_list, namespace)
            set_aside = self._set_aside(self._given(readable, arg_list, probe))
        finally:
            for action, was_required in required.items():
                action.required = was_required
        values: dict[argparse.Action, Any] = {}
        for action, (name, raw) in variables.items():
            if action not in set_aside:
                value = self._env_value(action, name, raw)
                if value is not _OFF:
                    values[action] = value
        self._check_exclusive(values)
        for action, value in values.items():
            setattr(parsed, action.dest, value)
        return parsed, rest

    def _given(
        self, actions: list[argparse.Action], args: list[str] | None, probe: Any
    ) -> set[argparse.Action]:
        """The `actions` the command line gave, told apart from defaults by marker defaults."""
        defaults = {action: action.default for action in actions}
        # 'append' copies a list default before adding to it, so a list marker works for it too
        markers: dict[argparse.Action, object] = {
            action: [] if isinstance(action, argparse._AppendAction) else _NotGiven()
            for action in actions
        }
        try:
            for action, marker in markers.items():
                action.default = marker
            parsed, _ = super().parse_known_args(args, probe)
        finally:
            for action, default in defaults.items():
                action.default = default
        return {
            action
            for action, marker in markers.items()
            if getattr(parsed, action.dest) is not marker
        }

    def _set_aside(self, given: set[argparse.Action]) -> set[argparse.Action]:
        """Options whose variable is not read: given, or excluded by an option given."""
        set_aside = set(given)
        for group in self._mutually_exclusive_groups:
            if any(action in given for action in group._group_actions):
                set_aside.update(group._group_actions)
        return set_aside

    def _env_value(self, action: argparse.Action, name: str, raw: str) -> Any:
        """The option's value from its variable, _OFF for a flag set off; bad: exit 2."""
        if action.nargs == 0:
            word = raw.strip().lower()
            if word in _TRUE:
                return action.const
            if word in _FALSE:
                return _OFF
            self.error(
                f"environment variable {name} ({action.option_strings[-1]}): {raw!r} is not "
                "on or off: give 1, true or yes, or 0, false or no"
            )
        many = isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+")
        items = [item.strip() for item in raw.split(SEPARATOR)] if many else [raw]
        try:
            if many and not all(items):
                raise argparse.ArgumentError(
                    action, f"an empty item in the {SEPARATOR!r}-separated list {raw!r}"
                )
            values = [self._checked(action, item) for item in items]
        except argparse.ArgumentError as exc:
            self.error(f"environment variable {name} ({action.option_strings[-1]}): {exc.message}")
        if isinstance(action, argparse._AppendAction):
            # as on the command line: the values come after the option's default ones
            return [*(action.default or []), *values]
        return values if many else values[0]

    def _checked(self, action: argparse.Action, text: str) -> Any:
        value = self._get_value(action, text)
        self._check_value(action, value)
        return value

    def _check_exclusive(self, values: dict[argparse.Action, Any]) -> None:
        """Options that exclude each other: at most one of them from the environment."""
        for group in self._mutually_exclusive_groups:
            from_env = [action for action in group._group_actions if action in values]
            if len(from_env) > 1:
                names = " and ".join(getattr(action, ENV_ATTR) for action in from_env)
                self.error(
                    f"environment variables {names}: give only one (the options exclude each other)"
                )
