"""Where each accepted recipient goes: aliases expanded first, then a mailbox of the Maildir for the server's own
domains, or the spool's queue for any other -- all of one message in one group commit, so the 250 means every copy
is durable."""

from __future__ import annotations

import functools
from collections.abc import Callable

from sockhop.engine.protocol import wait_for

from .address import split_address
from .aliases import AliasesError, expand
from .maildir import Maildir, mailbox_name
from .protocol import Envelope, Session
from .spool import Spool, envelope_line


class Router:
    """A Mailstore over a Maildir, an optional spool (``relays``: mail for other domains is queued) and aliases."""

    def __init__(
        self,
        maildir: Maildir,
        local_domains: frozenset[str],
        *,
        spool: Spool | None = None,
        aliases: dict[str, tuple[str, ...]] | None = None,
        on_queued: Callable[[str, tuple[bytes, bytes] | None], None] | None = None,
    ) -> None:
        self.maildir = maildir
        self.on_queued = on_queued  # a message went to the queue: the runner is woken with its id and its file's text
        self.local_domains = local_domains
        self.spool = spool
        self.aliases = aliases or {}
        self.relays = spool is not None
        check_targets(self.aliases, self.is_local, maildir.catch_all, queue=spool is not None)

    def is_local(self, domain: str) -> bool:
        return not domain or domain.lower().rstrip(".") in self.local_domains

    def accepts(self, local_part: str) -> bool:
        return local_part.lower() in self.aliases or self.maildir.accepts(local_part)

    def route(self, recipients: list[str]) -> tuple[list[str], list[str]]:
        """(local, remote) after alias expansion."""
        local: list[str] = []
        remote: list[str] = []
        for recipient in recipients:
            for address in expand(recipient, self.aliases, self.is_local) if self.aliases else [recipient]:
                (local if self.is_local(split_address(address)[1]) else remote).append(address)
        return list(dict.fromkeys(local)), list(dict.fromkeys(remote))

    def submit(self, session: Session, envelope: Envelope, done: Callable[[str | OSError], None]) -> None:
        local, remote = self.route(envelope.recipients)
        also = None
        if remote:
            spool = self.spool
            if spool is None:  # the protocol accepts no remote recipient without a spool
                done(OSError("no spool for remote recipients"))
                return
            user = session.user.name if session.user is not None else ""
            head = functools.partial(envelope_line, envelope.sender, remote, user=user, smtputf8=envelope.smtputf8,
                                     eight_bit=envelope.eight_bit)  # fmt: skip

            written: list[tuple[bytes, bytes]] = []  # the queue file's envelope line and text, for the runner

            def also(queue_id: str, content: bytes, now: float) -> list[tuple[int, str, str]]:
                line = head(now)
                written.append((line, content))
                return [spool.write(queue_id, line, content)]

            if self.on_queued is not None:
                told, wake = done, self.on_queued

                def done(result: str | OSError) -> None:
                    told(result)
                    if not isinstance(result, OSError):
                        wake(result, written[-1] if written else None)

        self.maildir.submit(session, envelope, done, recipients=local, also=also)

    def deliver(self, session: Session, envelope: Envelope) -> str:
        result = wait_for(functools.partial(self.submit, session, envelope))
        if isinstance(result, OSError):
            raise result
        assert isinstance(result, str)
        return result


def check_targets(aliases: dict[str, tuple[str, ...]], is_local: Callable[[str], bool], catch_all: bool, *,
                  queue: bool) -> None:  # fmt: skip
    """Every alias target can be delivered: a local one is another alias or a mailbox name, a remote one needs the
    queue. Raises AliasesError."""
    for name, targets in aliases.items():
        for target in targets:
            local, domain = split_address(target)
            if not is_local(domain):
                if not queue:
                    raise AliasesError(f"alias {name}: {target} is remote: remote targets need --spool")
            elif local.lower() not in aliases and not catch_all and mailbox_name(local) is None:
                raise AliasesError(f"alias {name}: {target!r} cannot be a mailbox name")
