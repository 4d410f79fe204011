"""The user's documents say what the code does: DEPLOY.md's table of errors lists every error code
with its status, and its tables of environment variables every variable the server reads, nothing
more."""

from __future__ import annotations

import re

from conftest import REPO_ROOT

from functions import http_errors
from functions.settings import Settings


def table_rows(path, header: str) -> list[list[str]]:
    """The cells of every row of every table in `path` whose header row starts with `header`."""
    rows, inside = [], False
    for line in (REPO_ROOT / path).read_text().splitlines():
        if line.startswith(header):
            inside = True
        elif inside and line.startswith("|"):
            if not line.startswith("|---"):
                rows.append([cell.strip() for cell in line.strip("|").split("|")])
        else:
            inside = False
    return rows


def documented_errors(path) -> dict[str, int]:
    found = {}
    for status, code, *_ in table_rows(path, "| status | code |"):
        if code:  # 200, 204: no code
            found[code.strip("`")] = int(status)
    return found


def test_the_table_of_errors_lists_every_code_with_its_status():
    assert documented_errors("DEPLOY.md") == http_errors.STATUS


class ReadNames(dict):
    """An empty environment that notes every name looked up in it."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def get(self, name, default=None):
        self.names.add(name)
        return default

    def __getitem__(self, name):
        self.names.add(name)
        raise KeyError(name)

    def __contains__(self, name):
        self.names.add(name)
        return False


def test_the_tables_of_settings_list_every_environment_variable_read():
    environ = ReadNames()
    Settings.from_env(environ)  # the server's settings and the library's configuration inside
    documented = set()
    for first, *_ in table_rows("DEPLOY.md", "| variable |"):
        # `NEURASTYLE_MAX_SIZE`, `_MAX_STEPS`, ...: a name starting "_" shares the row's prefix
        documented |= {"NEURASTYLE" + name if name.startswith("_") else name for name in re.findall(r"`(\w+)`", first)}
    assert "NEURASTYLE_MAX_SECONDS" in environ.names and "PORT" in environ.names
    assert documented == environ.names
