"""The dashboard of ``sockhop up``: the inbox of what the mail service stored, and what the services are doing.

inbox.py    the Maildir's messages, indexed once and kept current, searched, deleted
render.py   a message opened: text, HTML made safe, headers, attachments
api.py      the JSON API over the inbox (Mailpit's uses), request in, answer out
"""
