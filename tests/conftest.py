from tests.support import sockhop_server  # noqa: F401  (a fixture for every test)
