"""What the dashboard tests share: a mail server with its dashboard, over a temp folder, for the tests of a module."""

from __future__ import annotations

import pytest

from tests.support import start_server


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(the server, its folder): the Maildir is ``mail`` in the folder, the message log ``messages.log``."""
    root = tmp_path_factory.mktemp("dashboard")
    server = start_server(["serve", "mail", str(root / "mail"), "--domain", "sockhop.test", "--listen", "127.0.0.1:0",
                           "--dashboard", "127.0.0.1:0", "--message-log", str(root / "messages.log")],
                          announce=2)  # fmt: skip
    yield server, root
    server.stop()
    server.proc.stderr.close()
