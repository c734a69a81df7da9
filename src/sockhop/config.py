"""``sockhop.toml``: several services in one file, for ``sockhop up --config FILE`` and ``sockhop check``.

The file says what the command line says, under the same names: every key of a service is the long option of
``sockhop serve SERVICE`` (``idle-timeout``, or ``idle_timeout``), or its positional argument (``root`` for web,
``maildir`` for mail, ``zonefiles`` for dns). Keys at the top of the file apply to every service. Each service is
then turned into the very command line it stands for and parsed by the same parser, so a flag and a key can never
mean different things.

Every mistake is reported with its key and line (as ``nginx -t`` does), all of them at once, not just the first.
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from sockhop.errors import SockhopError
from sockhop.service import Problem


class ConfigError(SockhopError):
    """The configuration file has mistakes."""


@dataclass
class Mistake:
    line: int
    key: str
    message: str

    def format(self, path: str) -> str:
        where = f"{path}:{self.line}" if self.line else path
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


@dataclass
class ServiceConfig:
    name: str
    kind: str
    argv: list[str] = field(default_factory=list)  # the ``sockhop serve ...`` command line it stands for
    items: list[tuple[str, object, int]] = field(default_factory=list)  # (key, value, line) as written


class _Lines:
    """Where keys are in the text: tomllib gives values, not positions."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def of(self, table: str | None, key: str = "") -> int:
        start = 0
        if table is not None:
            header = re.compile(rf"^\s*\[\s*services\s*\.\s*\"?{re.escape(table)}\"?\s*\]")
            start = next((i for i, line in enumerate(self.lines) if header.match(line)), -1)
            if start < 0:
                return 0
            if not key:
                return start + 1
            start += 1
        pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        for i in range(start, len(self.lines)):
            line = self.lines[i]
            if re.match(r"^\s*\[", line):
                break
            if pattern.match(line):
                return i + 1
        return 0

    def of_subtable(self, table: str, key: str, name: str) -> int:
        """The line of ``[services.TABLE.KEY."NAME"]``."""
        parts = [r"services", rf"\"?{re.escape(table)}\"?", rf"\"?{re.escape(key)}\"?", rf"\"?{re.escape(name)}\"?"]
        header = re.compile(r"^\s*\[\s*" + r"\s*\.\s*".join(parts) + r"\s*\]")
        return next((i + 1 for i, line in enumerate(self.lines) if header.match(line)), 0)


def _table_items(
    service: str, key: str, value: dict, where: _Lines, mistakes: list[Mistake]
) -> list[tuple[str, object, int]]:
    """A table of tables -- ``[services.web.hosts."example.test"]`` -- stands for a repeatable option given once
    per sub-table as ``NAME=ROOT,KEY=VALUE,...`` (``--host example.test=/srv/a,no-listing``): its ``root`` first,
    then each key, true as ``key`` and false as ``no-key``, a list as the key once per item. Each keeps its own line,
    for the mistakes."""
    items: list[tuple[str, object, int]] = []
    for name, table in value.items():
        line = where.of_subtable(service, key, name) or where.of(service, key) or where.of(service)
        if not isinstance(table, dict):
            mistakes.append(Mistake(line, f"services.{service}.{key}.{name}", "must be a table"))
            continue
        words = [str(table.get("root", ""))]
        for option, setting in table.items():
            if option == "root":
                continue
            if isinstance(setting, bool):
                words.append(option if setting else f"no-{option}")
            elif isinstance(setting, str | int | float) and "," not in str(setting):
                words.append(f"{option}={setting}")
            elif isinstance(setting, list) and setting and all(isinstance(s, str) and "," not in s for s in setting):
                words.extend(f"{option}={item}" for item in setting)  # a repeatable option: proxy = ["/a/=...", ...]
            else:
                mistakes.append(Mistake(line, f"services.{service}.{key}.{name}.{option}", f"bad value {setting!r}"))
        items.append((key, f"{name}={','.join(words)}", line))
    return items


def _argv_for(
    parser: argparse.ArgumentParser, items: list[tuple[str, object, int]], mistakes: list[Mistake]
) -> list[str]:
    """The command line for ``items`` (key, value, line), checking each value as the option's own type would."""
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "func")}
    positional: list[str] = []
    options: list[str] = []
    for key, value, line in items:
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None or dest == "default_listen":
            known = ", ".join(sorted(a.replace("_", "-") for a in actions if a != "default_listen"))
            mistakes.append(Mistake(line, key, f"unknown key (known here: {known})"))
            continue
        values = value if isinstance(value, list) else [value]
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                mistakes.append(Mistake(line, key, f"wants true or false, not {value!r}"))
            elif value:
                options.append(action.option_strings[-1])
            continue
        many = isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*")
        if len(values) > 1 and not many:
            mistakes.append(Mistake(line, key, "takes one value, not a list"))
            continue
        ok = True
        for item in values:
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                mistakes.append(Mistake(line, key, f"wants a string or a number, not {item!r}"))
                ok = False
                continue
            text = str(item)
            try:
                checked = action.type(text) if callable(action.type) else text
            except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
                mistakes.append(Mistake(line, key, str(exc) or f"bad value {text!r}"))
                ok = False
                continue
            if action.choices is not None and checked not in action.choices:
                choices = ", ".join(map(str, action.choices))
                mistakes.append(Mistake(line, key, f"{text!r} is not one of {choices}"))
                ok = False
        if not ok:
            continue
        if not action.option_strings:
            positional += [str(v) for v in values]
        else:
            for item in values:
                options += [action.option_strings[-1], str(item)]
    for action in parser._actions:
        if action.option_strings and action.required and not any(s in options for s in action.option_strings):
            mistakes.append(Mistake(0, action.dest.replace("_", "-"), "missing (it is required)"))
        if not action.option_strings and action.nargs in (None, "+") and not positional and action.dest != "help":
            mistakes.append(Mistake(0, action.dest, "missing (it is required)"))
    return [*positional, *options]


def load(path: str | Path, *, thorough: bool = False) -> tuple[list[ServiceConfig], list[Mistake]]:
    """The services the file describes, and every mistake in it; ``thorough`` (``sockhop check``) also looks at
    the world: the files named exist and load, the Maildirs can be written, the ports are free."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"at line (\d+)", str(exc))
        return [], [Mistake(int(match[1]) if match else 0, "", f"not valid TOML: {exc}")]
    where = _Lines(text)
    from sockhop.cli import serve_parsers

    parsers = serve_parsers()
    mistakes: list[Mistake] = []
    services_table = data.pop("services", None)
    common = [(key, value, where.of(None, key)) for key, value in data.items()]
    if not isinstance(services_table, dict) or not services_table:
        mistakes.append(Mistake(0, "services", "no services: add a table such as [services.web]"))
        return [], mistakes
    configs = []
    for name, table in services_table.items():
        header = where.of(name)
        if not isinstance(table, dict):
            mistakes.append(Mistake(header, f"services.{name}", "must be a table"))
            continue
        kind = table.get("service", name)
        if kind not in parsers:
            line = where.of(name, "service") or header
            known = ", ".join(parsers)
            mistakes.append(Mistake(line, f"services.{name}", f"which service? set service = one of {known}"))
            continue
        items = [(k, v, line) for k, v, line in common if k not in table]
        found: list[Mistake] = []
        for k, v in table.items():
            if k == "service":
                continue
            if isinstance(v, dict) and v and all(isinstance(sub, dict) for sub in v.values()):
                items += _table_items(name, k, v, where, found)
            else:
                items.append((k, v, where.of(name, k)))
        argv = _argv_for(parsers[kind], items, found)
        top = {k for k, _, _ in common}
        for mistake in found:
            if mistake.key in top and mistake.key not in table:  # a top-level key: reported once, as itself
                if all((m.line, m.key, m.message) != (mistake.line, mistake.key, mistake.message) for m in mistakes):
                    mistakes.append(mistake)
                continue
            mistake.key = f"services.{name}.{mistake.key}" if mistake.key else f"services.{name}"
            mistake.line = mistake.line or header
            mistakes.append(mistake)
        configs.append(ServiceConfig(name, kind, ["serve", kind, *argv], items))
    mistakes += _deeper_checks(configs, where)
    if thorough and not mistakes:
        mistakes += _world_checks(configs, where, parsers, Path(path).resolve().parent)
    return configs, mistakes


def _deeper_checks(configs: list[ServiceConfig], where: _Lines) -> list[Mistake]:
    """What a value's type cannot say: endpoints, networks, users."""
    from sockhop.engine.proxy import parse_sources
    from sockhop.net.addresses import parse_endpoint
    from sockhop.process.privileges import find_account

    checks = {
        "listen": lambda t: parse_endpoint(t, default_port=0),  # a host alone takes the service's port
        "listen_tls": parse_endpoint,
        "admin": parse_endpoint,
        "dashboard": parse_endpoint,
        "proxy_protocol": lambda t: parse_sources([t]),
        "user": find_account,
    }
    mistakes: list[Mistake] = []
    seen = set()
    for config in configs:
        header = where.of(config.name)
        for key, value, line in config.items:
            name = f"services.{config.name}.{key}" if header and line > header else key
            check = checks.get(key.replace("-", "_"))
            for text in value if isinstance(value, list) else [value]:
                if check is None or not isinstance(text, str):
                    continue
                try:
                    check(text)
                except SockhopError as exc:
                    if (line, name, str(exc)) not in seen:  # a top-level key is checked once
                        seen.add((line, name, str(exc)))
                        mistakes.append(Mistake(line, name, str(exc)))
    return mistakes


def _world_checks(
    configs: list[ServiceConfig], where: _Lines, parsers: dict[str, argparse.ArgumentParser], base: Path
) -> list[Mistake]:
    """What ``up --config`` would trip on once it starts: each service's own checks (a site root, zone files that
    load, a Maildir that can be written), certificates that load, endpoints that can be bound -- all of them,
    with the line of the key that names them. Paths are relative to the file's folder, as when it runs."""
    import os

    from sockhop.net.addresses import parse_endpoint
    from sockhop.services import BY_NAME
    from sockhop.serving import certificates_from, close_all_sockets, open_endpoints

    mistakes: list[Mistake] = []
    bound: list = []  # held until every service is checked: two services on one port is a mistake too
    here = os.getcwd()
    os.chdir(base)
    try:
        for config in configs:
            service = BY_NAME[config.kind]
            args = parsers[config.kind].parse_args(config.argv[2:])

            def line_of(option: str, config: ServiceConfig = config) -> tuple[int, str]:
                option, _, name = option.partition("=")  # "hosts=NAME": the item given for that name
                for key, value, line in config.items:
                    if key.replace("_", "-") == option and (not name or str(value).startswith(f"{name}=")):
                        header = where.of(config.name)
                        return line, f"services.{config.name}.{key}" if header and line > header else key
                return where.of(config.name), f"services.{config.name}"

            problems = list(service.check(args))
            try:
                certificates_from(args)
            except SockhopError as exc:
                problems.append(Problem("tls-cert", str(exc)))
            for option, kinds, texts in (
                ("listen", service.kinds(args), args.listen or ([] if args.listen_tls else [args.default_listen])),
                ("listen-tls", (socket.SOCK_STREAM,), args.listen_tls or []),
                ("admin", (socket.SOCK_STREAM,), [args.admin] if args.admin else []),
            ):
                for kind in kinds:
                    try:
                        default = parse_endpoint(args.default_listen).port if option == "listen" else None
                        bound += open_endpoints(texts, kind, default_port=default)
                    except SockhopError as exc:
                        problems.append(Problem(option, str(exc)))
            for problem in problems:
                line, key = line_of(problem.option)
                mistakes.append(Mistake(line, key, problem.message))
    finally:
        os.chdir(here)
        close_all_sockets(bound)
    return mistakes


def check(path: str) -> int:
    """``sockhop check --config FILE``: every mistake with its line, or a one-line summary."""
    configs, mistakes = load(path, thorough=True)
    if mistakes:
        for mistake in sorted(mistakes, key=lambda m: m.line):
            print(mistake.format(path), file=sys.stderr)
        raise ConfigError(f"{path}: {len(mistakes)} mistake(s)")
    print(f"{path}: ok, {len(configs)} service(s): " + ", ".join(f"{c.name} ({c.kind})" for c in configs))
    return 0


def up(path: str, *, pid_file: str | None = None) -> int:
    """``sockhop up --config FILE``: each service in its own ``sockhop serve`` process (each its own model and
    user); SIGINT/SIGTERM/SIGHUP/SIGUSR2 are passed on; when one fails, the others are stopped."""
    configs, mistakes = load(path)
    if mistakes:
        for mistake in sorted(mistakes, key=lambda m: m.line):
            print(mistake.format(path), file=sys.stderr)
        raise ConfigError(f"{path}: {len(mistakes)} mistake(s); nothing started")
    from sockhop.process.supervisor import Supervisor

    return Supervisor(configs, str(Path(path).resolve().parent), pid_file=pid_file).run()
