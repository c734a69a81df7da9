"""Every service sockhop has, as the face reads them: ``sockhop serve``, ``sockhop up`` and ``sockhop.toml`` take
their names, options and defaults from here. Adding a service is one package with a ``SERVICE`` and one line here.
"""

from __future__ import annotations

from sockhop import echo
from sockhop.dns.service import SERVICE as DNS
from sockhop.mail.service import SERVICE as MAIL
from sockhop.service import Service
from sockhop.web.service import SERVICE as WEB

SERVICES: tuple[Service, ...] = (echo.SERVICE, WEB, DNS, MAIL)
BY_NAME: dict[str, Service] = {service.name: service for service in SERVICES}
