"""What a deployment is built from: the container's base image and installs, the Cloud
Function's requirements, and settings that suit the platforms DEPLOY.md names."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from conftest import REPO_ROOT
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
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


def test_the_images_start_up_warm_up_is_of_sizes_its_cache_holds():
    """A container warms up from the cache its build filled; a size outside it would compile for
    minutes before the container is ready."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    cached, serving = (set(re.search(rf"^ARG {name}=(\S*)$", dockerfile, re.M).group(1).split(","))
                       for name in ("WARMUP", "SERVE_WARMUP"))
    assert serving and serving <= cached
    assert re.search(r"NEURASTYLE_WARMUP=\$SERVE_WARMUP", dockerfile)


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


def test_the_oldest_python_the_project_accepts_runs_every_pinned_package():
    """pip refuses a Python outside requires-python with a clear message; an older one that it
    let through would fail later, on a pinned package that needs a newer Python."""
    accepted = SpecifierSet(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    oldest = next(v for v in (f"3.{minor}" for minor in range(6, 20)) if v in accepted)
    installed = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}
    pinned = pins(REPO_ROOT / "constraints.txt")
    assert {"numpy", "scipy", "jax"} <= set(installed) & set(pinned)
    for name, version in pinned.items():
        if name not in installed:  # an extra this environment did not install
            continue
        needs = installed[name].metadata.get("Requires-Python") or ""
        assert oldest in SpecifierSet(needs), f"{name}=={version} needs Python {needs}, pyproject accepts {oldest}"
    base = re.search(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)", (REPO_ROOT / "Dockerfile").read_text(), re.M)
    assert base and base.group(1) in accepted


def test_the_drain_fits_in_cloud_runs_grace_period():
    assert Settings().drain_s < CLOUD_RUN_GRACE_S
    assert Settings.from_env({}).drain_s < CLOUD_RUN_GRACE_S
