"""contrib/k8s/sockhop-web.yaml without a cluster: kubectl's own kustomize reads every document (YAML and the
apiVersion/kind/name of each object), the container's args parse as a sockhop command line whose ports are the
containerPorts the probes and the Service name, and that command runs -- its listeners moved to ephemeral loopback
ports -- answering the readiness probe's /healthz and serving the ConfigMap's page. Not tested here: the image build
(contrib/k8s/Containerfile: no container runtime), running as uid 65534 from the start (this machine's Python is
under /root), the API server's schema validation, scheduling, the probes and the Service's balancing (no
cluster)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request

import pytest

from sockhop.cli import build_parser
from tests.prod.helpers import fetch
from tests.support import ROOT, require_tool, start_server

MANIFEST = ROOT / "contrib" / "k8s" / "sockhop-web.yaml"


def container_args() -> list[str]:
    """The container's args (one flow sequence on one line, as the manifest writes it)."""
    (line,) = [line for line in MANIFEST.read_text().splitlines() if line.strip().startswith("args:")]
    return json.loads(line.split(":", 1)[1])


@pytest.mark.interop
def test_every_document_is_read_by_kubectl_kustomize(tmp_path):
    kubectl = require_tool("kubectl")
    shutil.copy(MANIFEST, tmp_path / MANIFEST.name)
    (tmp_path / "kustomization.yaml").write_text(f"resources:\n  - {MANIFEST.name}\n")
    done = subprocess.run([kubectl, "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    kinds = re.findall(r"^kind: (\S+)$", done.stdout, re.MULTILINE)
    assert sorted(kinds) == ["ConfigMap", "Deployment", "Service"]


def test_the_container_args_are_a_valid_sockhop_command_line():
    args = build_parser().parse_args(container_args())  # exits (SystemExit) on anything argparse refuses
    assert (args.command, args.service, args.model, args.log_format) == ("serve", "web", "prefork", "json")
    text = MANIFEST.read_text()
    ports = dict(re.findall(r"\{name: (\w+), containerPort: (\d+)\}", text))
    assert args.listen == [f":{ports['http']}"] and args.admin == f":{ports['admin']}"
    assert "httpGet: {path: /healthz, port: admin}" in text
    assert re.search(r"targetPort: http\b", text)


def test_the_container_command_serves_the_configmap_and_the_probe(tmp_path):
    page = re.search(r"index\.html: \|\n\s+(.*)\n", MANIFEST.read_text())[1]  # the ConfigMap's file
    (tmp_path / "index.html").write_text(page + "\n")
    here = {"/srv/www": str(tmp_path), ":8080": "127.0.0.1:0", ":9100": "127.0.0.1:0"}
    server = start_server([here.get(a, a) for a in container_args()], announce=2, timeout=60)
    try:
        host, port = server.address("admin")
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=10) as response:
            assert response.read() == b"ok\n"
        status, body = fetch(*server.address("web"), "/")
        assert (status, body.decode().strip()) == (200, page)
        assert server.stop() == 0  # SIGTERM, as a rolling update sends
    finally:
        server.stop()
        if server.proc.stderr:
            server.proc.stderr.close()
