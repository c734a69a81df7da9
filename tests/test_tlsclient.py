"""The one client TLS context builder that get, send, resolve and talk share."""

from __future__ import annotations

import ssl

import pytest

from sockhop.errors import SockhopError
from sockhop.mail.client import tls_context as mail_context
from sockhop.tlsclient import CACertError, client_context


def test_verified_by_default_and_unverified_only_when_asked(capsys):
    context = client_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    quiet = client_context(verify=False)  # mail's opportunistic STARTTLS: encrypt, say nothing
    assert quiet.verify_mode == ssl.CERT_NONE and not quiet.check_hostname
    assert capsys.readouterr().err == ""
    client_context(insecure=True)  # the user's -k: said
    assert "not verifying" in capsys.readouterr().err


def test_a_cacert_that_cannot_be_used_is_one_line(tmp_path):
    with pytest.raises(CACertError, match="cannot use --cacert /nonexistent: no such file"):
        client_context("/nonexistent")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(SockhopError, match=f"cannot use --cacert {junk}: "):
        client_context(str(junk))


def test_mail_modes_map_onto_it():
    assert mail_context("off", None) is None
    assert mail_context("opportunistic", None).verify_mode == ssl.CERT_NONE
    assert mail_context("required", None).verify_mode == ssl.CERT_REQUIRED
