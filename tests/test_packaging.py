"""The wheel and the sdist as a user and a packager get them: built, checked, and listed.

``python -m build`` makes the sdist and then the wheel from that sdist (so the sdist alone can build
the package); ``twine check`` validates their metadata and that the README renders on the index. The
archives' contents are listed against what the README's "What the package contains" says.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from airflow_provider_noxus import __version__

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "airflow_provider_noxus"
#: The sdist's files outside the package and its egg-info.
SDIST_FILES = {
    "CHANGELOG.md", "LICENSE", "MANIFEST.in", "PKG-INFO", "README.md", "pyproject.toml", "setup.cfg",
}  # fmt: skip
#: What stays in the repository.
REPOSITORY_ONLY = ("tests/", "dags_examples/", "scripts/", "benchmarks/", "docs/", "constraints/")


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, (built.stdout + built.stderr)[-4000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


def package_sources() -> set[str]:
    """The package's files as the repository has them: modules, data files and the typing marker."""
    files = {
        path.relative_to(REPO).as_posix()
        for pattern in ("**/*.py", "py.typed", "emulator/*.json", "emulator/*.yaml")
        for path in (REPO / PACKAGE).glob(pattern)
        if "__pycache__" not in path.parts
    }
    return files


def test_twine_check_passes(archives: tuple[Path, Path]) -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, archives)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2


def test_wheel_holds_the_package_and_the_licence(archives: tuple[Path, Path]) -> None:
    wheel, _ = archives
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"airflow_provider_noxus-{__version__}.dist-info"
        metadata = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()

    assert {n for n in names if not n.startswith(dist_info)} == package_sources()
    assert f"{dist_info}/licenses/LICENSE" in names
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Requires-Python"] == ">=3.11"
    assert "Typing :: Typed" in metadata.get_all("Classifier")
    assert "Programming Language :: Python :: 3.11" in metadata.get_all("Classifier")
    assert metadata["Keywords"]
    assert {"test", "openlineage", "dev"} <= set(metadata.get_all("Provides-Extra"))
    # What a user gets for the pytest plugin: pytest and pytest-asyncio, no repository tooling.
    test_extra = {
        re.split(r"[<>=;\s]", requirement)[0]
        for requirement in metadata.get_all("Requires-Dist")
        if 'extra == "test"' in requirement
    }
    assert test_extra == {"pytest", "pytest-asyncio"}
    assert "apache_airflow_provider" in entry_points and "pytest11" in entry_points


def test_sdist_holds_the_sources_and_release_documents_only(archives: tuple[Path, Path]) -> None:
    _, sdist = archives
    with tarfile.open(sdist) as archive:
        top = f"airflow_provider_noxus-{__version__}/"
        names = {m.name.removeprefix(top) for m in archive.getmembers() if m.isfile()}

    egg_info = {n for n in names if n.startswith(f"{PACKAGE}.egg-info/")}
    assert {n for n in names if n.startswith(f"{PACKAGE}/")} == package_sources()
    assert names - egg_info - package_sources() == SDIST_FILES
    assert not [n for n in names if n.startswith(REPOSITORY_ONLY)]


def test_readme_says_what_the_archives_hold() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## What the package contains", 1)[1].split("\n## ", 1)[0]

    for name in [*sorted(SDIST_FILES - {"PKG-INFO", "setup.cfg"}), PACKAGE, "dags_examples/"]:
        assert f"`{name}`" in section, name
    assert "Neither holds the test suite" in section
