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
import os
import re
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from sockhop.console import say
from sockhop.errors import SockhopError

SERVICE_KINDS = ("web", "dns", "mail", "echo")


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


def _serve_parsers() -> dict[str, argparse.ArgumentParser]:
    from sockhop.cli import build_parser

    parser = build_parser()
    serve = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices["serve"]
    services = next(a for a in serve._subparsers._group_actions if a.dest == "service")
    return {name: services.choices[name] for name in SERVICE_KINDS if name in services.choices}


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


def load(path: str | Path) -> tuple[list[ServiceConfig], list[Mistake]]:
    """The services the file describes, and every mistake in it."""
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
    parsers = _serve_parsers()
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
            mistakes.append(Mistake(line, f"services.{name}", f"which service? set service = one of {SERVICE_KINDS}"))
            continue
        items = [(k, v, line) for k, v, line in common if k not in table]
        items += [(k, v, where.of(name, k)) for k, v in table.items() if k != "service"]
        found: list[Mistake] = []
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
    return configs, mistakes


def _deeper_checks(configs: list[ServiceConfig], where: _Lines) -> list[Mistake]:
    """What a value's type cannot say: endpoints, networks, users."""
    from sockhop.engine.privileges import find_account
    from sockhop.engine.proxy import parse_sources
    from sockhop.net.addresses import parse_endpoint

    checks = {"listen": parse_endpoint, "listen_tls": parse_endpoint, "admin": parse_endpoint,
              "proxy_protocol": lambda t: parse_sources([t]), "user": find_account}  # fmt: skip
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


def check(path: str) -> int:
    """``sockhop check --config FILE``: every mistake with its line, or a one-line summary."""
    configs, mistakes = load(path)
    if mistakes:
        for mistake in sorted(mistakes, key=lambda m: m.line):
            print(mistake.format(path), file=sys.stderr)
        raise ConfigError(f"{path}: {len(mistakes)} mistake(s)")
    print(f"{path}: ok, {len(configs)} service(s): " + ", ".join(f"{c.name} ({c.kind})" for c in configs))
    return 0


def up(path: str) -> int:
    """``sockhop up --config FILE``: each service in its own ``sockhop serve`` process (each its own model and
    user); SIGINT/SIGTERM/SIGHUP/SIGUSR2 are passed on; when one fails, the others are stopped."""
    configs, mistakes = load(path)
    if mistakes:
        for mistake in sorted(mistakes, key=lambda m: m.line):
            print(mistake.format(path), file=sys.stderr)
        raise ConfigError(f"{path}: {len(mistakes)} mistake(s); nothing started")
    return Supervisor(configs, str(Path(path).resolve().parent)).run()


PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        return False


class Supervisor:
    """The services' masters, as ``up --config`` watches them.

    Following a zero-downtime restart: on SIGUSR2 each master starts its successor as its own child (see
    :mod:`sockhop.engine.restart`), hands it the sockets, drains and exits. ``up`` is a child subreaper
    (``PR_SET_CHILD_SUBREAPER``), so the kernel makes that successor ``up``'s child the moment the old master
    exits; when ``up`` reaps the old master it finds the new one among its children -- the same command line --
    and watches it instead. A master that exits with no successor is handled as before: status 0 is a service
    stopped, anything else stops the others. Without the subreaper (not Linux) the successor goes to init and
    ``up`` stops watching that service.
    """

    def __init__(self, configs: list[ServiceConfig], base: str) -> None:
        self.configs = configs
        self.base = base
        self.masters: dict[int, ServiceConfig] = {}  # pid -> the service it serves
        self.forwarded: list[int] = []
        self.restarting: set[int] = set()  # masters sent SIGUSR2: one that exits 0 has handed over to a successor

    def command(self, config: ServiceConfig) -> list[str]:
        return [sys.executable, "-m", "sockhop", *config.argv]

    def run(self) -> int:
        adopting = _prctl(PR_SET_CHILD_SUBREAPER, 1)
        me = os.getpid()

        def end_with_up() -> None:
            # In each child. Its own process group: Ctrl-C in a terminal reaches up alone, which passes it on once
            # (a second SIGINT would end a master's graceful stop at once). SIGTERM, a graceful stop, if up dies,
            # even by SIGKILL -- the one thing up cannot pass on.
            os.setpgid(0, 0)
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != me:
                os.kill(os.getpid(), signal.SIGTERM)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2):
            signal.signal(sig, self.forward)
        for config in self.configs:
            proc = subprocess.Popen(self.command(config), cwd=self.base, preexec_fn=end_with_up)
            self.masters[proc.pid] = config
        status = 0
        while self.masters:
            pid, code = _wait_any()
            config = self.masters.pop(pid, None)
            if config is None:
                continue  # an orphan handed to us that is no master (none expected)
            restarted = pid in self.restarting
            self.restarting.discard(pid)
            successor = self.successor(config) if adopting and restarted and code == 0 else None
            if successor is not None:
                self.masters[successor] = config
                say(f"sockhop up: {config.name}: master {successor} took over from {pid}")
                if self.forwarded:  # a stop came while the old one drained: the new one stops too
                    self._kill(successor, self.forwarded[-1])
                continue
            if code != 0 and not self.forwarded:
                say(f"sockhop up: {config.name} stopped with status {code}; stopping the others")
                status = 1
                self.forward(signal.SIGTERM, None)
        return status

    def forward(self, signum: int, frame: object) -> None:
        if signum == signal.SIGUSR2:
            self.restarting.update(self.masters)
        else:
            self.forwarded.append(signum)
        for pid in list(self.masters):
            self._kill(pid, signum)

    @staticmethod
    def _kill(pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def successor(self, config: ServiceConfig) -> int | None:
        """The restarted master of ``config`` among up's children (reparented here when its parent exited, having
        waited for its own workers: nothing else of it can be here)."""
        command = "\0".join(self.command(config)) + "\0"
        for pid in _children():
            if pid in self.masters:
                continue
            try:
                with open(f"/proc/{pid}/cmdline") as f:
                    if f.read() == command:
                        return pid
            except OSError:
                continue
        return None


def _children() -> list[int]:
    me = os.getpid()
    pids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{me}/task"):
            with open(f"/proc/{me}/task/{task}/children") as f:
                pids += [int(pid) for pid in f.read().split()]
    except OSError:
        pass
    return pids


def _wait_any() -> tuple[int, int]:
    while True:
        try:
            pid, status = os.wait()
        except InterruptedError:
            continue
        return pid, os.waitstatus_to_exitcode(status)
