"""`nst-jax serve`: run the HTTP function (functions/main.py, target ``neurastyle``) locally.

The same server functions-framework runs in production: gunicorn with one worker process
(env WORKERS) and 4 threads per CPU (env THREADS), so the model is loaded once and shared.
"""

from __future__ import annotations

import os
from pathlib import Path

from nst_jax.errors import NSTError

TARGET = "neurastyle"


def function_source() -> Path:
    """functions/main.py: $NEURASTYLE_FUNCTION_SOURCE, else beside this package in a checkout,
    else under the current directory."""
    if os.environ.get("NEURASTYLE_FUNCTION_SOURCE"):
        candidates = [Path(os.environ["NEURASTYLE_FUNCTION_SOURCE"])]
    else:
        candidates = [Path(__file__).resolve().parent.parent / "functions" / "main.py",
                      Path.cwd() / "functions" / "main.py"]
    for path in candidates:
        if path.is_file():
            return path
    raise NSTError(f"cannot find the HTTP function source (looked for {', '.join(map(str, candidates))}); "
                   "run from a checkout of the project or set NEURASTYLE_FUNCTION_SOURCE")


def serve(host: str = "127.0.0.1", port: int = 8080, debug: bool = False) -> None:
    """Serve the function and its web page at http://host:port/ until interrupted."""
    import functions_framework
    from functions_framework._http import create_server  # what `functions-framework` itself uses

    app = functions_framework.create_app(target=TARGET, source=str(function_source()))
    print(f"NeuraStyle on http://{host}:{port}/  (stylize: POST /stylize, health: GET /healthz)", flush=True)
    create_server(app, debug).run(host, port)
