"""Upstreams as --proxy names them (web/upstream.py): URLs checked in one line, the prefix replaced as nginx's
proxy_pass does, turns taken, a failed upstream tried last, the longest prefix winning."""

from __future__ import annotations

import argparse

import pytest

from sockhop.web.upstream import Route, make_routes, make_upstream, proxy_spec


def test_a_proxy_option_names_a_prefix_and_its_upstreams():
    assert proxy_spec("/api/=http://127.0.0.1:8000/,unix:/run/app.sock:/v1") == (
        "/api/",
        ["http://127.0.0.1:8000/", "unix:/run/app.sock:/v1"],
    )
    assert proxy_spec("/=http://127.0.0.1:1|http://127.0.0.1:2")[1] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]


@pytest.mark.parametrize(
    "text",
    ["api=http://127.0.0.1/", "/api/", "/api/=ftp://127.0.0.1/", "/a=http://127.0.0.1:99999/", "/a=unix:run.sock",
     "/a=http://127.0.0.1/?q=1", "/a=http://user@127.0.0.1/"],
)  # fmt: skip
def test_a_wrong_proxy_option_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        proxy_spec(text)


def test_an_upstream_knows_where_it_is_and_what_host_it_is_told():
    plain = make_upstream("http://127.0.0.1:8000/app/")
    assert (plain.address, plain.host, plain.path, plain.tls) == (("127.0.0.1", 8000), "127.0.0.1:8000", "/app/", None)
    default_port = make_upstream("http://[::1]")
    assert (default_port.address, default_port.host, default_port.path) == (("::1", 80), "[::1]", None)
    secure = make_upstream("https://127.0.0.1/")
    assert secure.address == ("127.0.0.1", 443) and secure.tls is not None and secure.server_hostname == "127.0.0.1"
    unix = make_upstream("unix:/run/app.sock:/v1/")
    assert (unix.address, unix.path) == ("/run/app.sock", "/v1/")


def test_the_prefix_is_replaced_by_the_url_s_path_or_kept():
    route = Route("/api/", [make_upstream("http://127.0.0.1:1/"), make_upstream("http://127.0.0.1:2")])
    assert route.target(route.upstreams[0], b"/api/x?y=1") == b"/x?y=1"
    assert route.target(route.upstreams[1], b"/api/x?y=1") == b"/api/x?y=1"


def test_upstreams_take_turns_and_a_failed_one_goes_last():
    a, b, c = (make_upstream(f"http://127.0.0.1:{port}") for port in (1, 2, 3))
    route = Route("/", [a, b, c])
    assert [route.order(0)[0] for _ in range(4)] == [a, b, c, a]
    b.failed_until = 100
    assert route.order(50) == [c, a, b]  # b's turn, but it failed lately
    assert route.order(150)[0] is c  # the next turn, b or no b


def test_the_longest_prefix_wins():
    routes = make_routes([("/", ["http://127.0.0.1:1"]), ("/api/", ["http://127.0.0.1:2"]),
                          ("/api/", ["http://127.0.0.1:3"])])  # fmt: skip
    assert routes is not None
    api = routes.match(b"/api/x")
    assert api is not None and api.prefix == "/api/" and len(api.upstreams) == 2
    assert routes.match(b"/other").prefix == "/"
    assert make_routes([]) is None
