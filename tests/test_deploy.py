"""What a deployment is built from: the container's base image and installs, the Cloud
Function's requirements, and settings that suit the platforms DEPLOY.md names."""

from __future__ import annotations

import re
from importlib import metadata

from conftest import REPO_ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from functions.settings import Settings

CLOUD_RUN_GRACE_S = 10  # seconds between SIGTERM and SIGKILL on Cloud Run


def pins(path) -> dict[str, str]:
    """name -> version of a file of `name==version` lines (comments and blanks skipped)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"{path.name}: {line!r} is not pinned"
            found[canonicalize_name(name)] = version.strip()
    return found


def runtime_requirements(name: str) -> set[str]:
    """The installed distribution's own requirements (no extras), as this platform evaluates them."""
    names = set()
    for text in metadata.requires(name) or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            names.add(canonicalize_name(requirement.name))
    return names


def test_the_base_image_is_pinned_by_digest():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    assert base and re.search(r"@sha256:[0-9a-f]{64}$", base.group(1)), "the base image has no digest"
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}$", dockerfile, re.M)


def test_the_images_warm_up_covers_the_built_in_paintings():
    """A server's warm-up analyses its built-in paintings at every scale: the image's cache must
    hold those programs too, or every new instance compiles them before it is ready."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"nst-jax warmup [^\n]*--style web/styles/\*\.jpg", dockerfile)
    assert list((REPO_ROOT / "web" / "styles").glob("*.jpg"))


def test_the_container_installs_the_tested_versions():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    installs = re.findall(r"pip install [^\n\\]*", dockerfile)
    assert installs and all("-c constraints.txt" in command for command in installs), installs
    assert re.search(r"^COPY [^\n]*constraints\.txt", dockerfile, re.M)


def test_the_functions_requirements_pin_every_runtime_dependency_at_the_tested_version():
    required = pins(REPO_ROOT / "functions" / "requirements.txt")
    tested = pins(REPO_ROOT / "constraints.txt")
    for name in ("functions-framework", "jax", "jaxlib", "flax", "optax", "scipy", "numpy", "pillow"):
        assert name in required, f"{name} is missing"
    for name, version in required.items():
        assert tested.get(name) == version, f"{name}=={version}, tested with {tested.get(name)}"
        missing = runtime_requirements(name) - set(required)
        assert not missing, f"{name} needs {sorted(missing)}, not pinned"


def test_the_drain_fits_in_cloud_runs_grace_period():
    assert Settings().drain_s < CLOUD_RUN_GRACE_S
    assert Settings.from_env({}).drain_s < CLOUD_RUN_GRACE_S
