"""Dropping root, as nginx, BIND and Postfix do: bind the privileged ports as root, then become an ordinary user
for good before serving anything.

"For good" means the real, effective and saved user and group IDs all change and the supplementary groups become
the user's own, so no later code (a protocol bug, a crafted request) can take root back. It happens in the process
that will serve or fork the servers, before the first fork, so every model's workers and children inherit it.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from sockhop.errors import SockhopError


class PrivilegeError(SockhopError):
    """Cannot change to that user."""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    group: str


def find_account(name: str) -> Account:
    """The user (by name or number) and its primary group; one plain line if there is no such user."""
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(f"--user {name}: no such user on this machine (see /etc/passwd)") from None
    try:
        group = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        group = str(entry.pw_gid)
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, group)


def drop_to(account: Account) -> None:
    """Become ``account`` for good: supplementary groups, then the group, then the user (this order: once the user
    ID is not 0 the group can no longer be changed)."""
    if os.geteuid() != 0:
        if os.geteuid() == account.uid:
            return  # already that user: nothing to drop
        raise PrivilegeError(f"--user {account.name}: only root can change to another user; start as root")
    try:
        os.setgroups(os.getgrouplist(account.name, account.gid))
        os.setresgid(account.gid, account.gid, account.gid)
        os.setresuid(account.uid, account.uid, account.uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot change to user {account.name}: {exc.strerror}") from None
    if account.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise PrivilegeError(f"changed to user {account.name} but could take root back; refusing to serve")


def give_to(account: Account, folder: Path) -> None:
    """Hand a data folder (and what is in it) to ``account``, so the dropped server can write where it stores."""
    if os.geteuid() != 0 or not folder.exists():
        return
    try:
        os.chown(folder, account.uid, account.gid)
        for top, dirs, files in os.walk(folder):
            for name in dirs + files:
                os.chown(os.path.join(top, name), account.uid, account.gid, follow_symlinks=False)
    except OSError as exc:
        raise PrivilegeError(f"cannot give {folder} to user {account.name}: {exc.strerror}") from None
