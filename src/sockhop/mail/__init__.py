"""Mail: an SMTP server delivering to Maildir (the Sendmail role), a client that routes by MX, and a mailbox
reader.

    codes.py      reply codes (named constants shared by server, client and tests), formatting and parsing replies
    address.py    mailbox paths and ESMTP parameters of MAIL FROM / RCPT TO
    protocol.py   the server side of RFC 5321, sans-IO: a state machine fed bytes, answering engine Replies
    trace.py      the Received: and Return-Path: headers a delivering server adds
    maildir.py    durable delivery (tmp/ -> fsync -> new/ -> fsync dir) and reading mailboxes back
    auth.py       the password file (salted scrypt) and SASL PLAIN/LOGIN for SMTP AUTH
    spool.py      the durable queue of mail for other domains, and the contract a queue runner delivers from
    aliases.py    sendmail's aliases file, and expanding a recipient
    router.py     where each recipient goes: aliases, then the Maildir or the spool, in one group commit
    client.py     building a message and delivering it over SMTP, with PIPELINING
    mx.py         finding a domain's mail exchangers (MX, then A/AAAA)
    service.py    mail as a service: ``serve mail``, ``send``, ``mailbox``, and its part of ``sockhop up``
    send.py       ``sockhop send``;  mailbox.py ``sockhop mailbox``;  messagelog.py ``--message-log``
    queue.py      ``sockhop queue``;  passwd.py ``sockhop mail passwd``
"""
