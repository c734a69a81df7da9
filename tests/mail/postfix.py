"""A private Postfix for a test: its own configuration, queue and data folders, listening on one port of 127.0.0.1.
/etc/postfix/main.cf names its folder in alternate_config_directories while it runs (Postfix refuses -c DIR
otherwise), and is put back after."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support import wait_for_port

MASTER_CF = [
    "{listen} inet n - n - - smtpd", "pickup unix n - n 60 1 pickup", "cleanup unix n - n - 0 cleanup",
    "qmgr unix n - n 300 1 qmgr", "rewrite unix - - n - - trivial-rewrite", "bounce unix - - n - 0 bounce",
    "defer unix - - n - 0 bounce", "trace unix - - n - 0 bounce", "verify unix - - n - 1 verify",
    "flush unix n - n 1000? 0 flush", "proxymap unix - - n - - proxymap", "proxywrite unix - - n - 1 proxymap",
    "smtp unix - - n - - smtp", "relay unix - - n - - smtp", "showq unix n - n - - showq",
    "error unix - - n - 0 error", "retry unix - - n - 0 error", "discard unix - - n - 0 discard",
    "tlsmgr unix - - n 1000? 1 tlsmgr", "anvil unix - - n - 1 anvil", "scache unix - - n - 1 scache",
    "postlog unix-dgram n - n - 1 postlogd",
]  # fmt: skip


class PrivatePostfix:
    """Started on ``port`` with ``settings`` (main.cf lines of the test's own: host name, relaying, delivery) beside
    the folders, owner and logging every private Postfix has; ``services`` adds to master.cf. The work folder must be
    reachable by Postfix's users (not tmp_path)."""

    def __init__(self, work: Path, port: int, settings: str, services: tuple[str, ...] = ()) -> None:
        self.work, self.port, self.etc = work, port, work / "etc"
        spool, data = work / "spool", work / "data"
        for folder in (self.etc, spool, data):
            folder.mkdir(parents=True)
        shutil.chown(data, "postfix")
        self.main_cf = Path("/etc/postfix/main.cf")
        self.saved = self.main_cf.read_text() if self.main_cf.exists() else None
        kept = [line for line in (self.saved or "").splitlines() if not line.startswith("alternate_config_directories")]
        self.main_cf.parent.mkdir(exist_ok=True)
        self.main_cf.write_text("\n".join(kept + [f"alternate_config_directories = {self.etc}"]) + "\n")
        (self.etc / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
maillog_file = {work}/postfix.log
maillog_file_prefixes = /var, /dev/stdout, {work}
biff = no
{settings}""")
        master = [*MASTER_CF, *services]
        (self.etc / "master.cf").write_text("\n".join(master).format(listen=f"127.0.0.1:{port}") + "\n")
        done = subprocess.run(["postfix", "-c", str(self.etc), "start"], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            self.restore()
            raise AssertionError(f"postfix did not start: {done.stderr or done.stdout}")
        wait_for_port(port, what="postfix's smtpd", timeout=20)  # started: smtpd listens a moment later

    def log(self) -> str:
        path = self.work / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def restore(self) -> None:
        if self.saved is None:
            self.main_cf.unlink(missing_ok=True)
        else:
            self.main_cf.write_text(self.saved)

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], capture_output=True, timeout=60)
        self.restore()
