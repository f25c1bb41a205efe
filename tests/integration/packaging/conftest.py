"""Fixtures for the packaging tests: the packages, built once per session, and the host tools."""

from __future__ import annotations

import pytest

from tests.integration.packaging.support import Packages, PackagingTestError, build_all, ensure_host_tools


@pytest.fixture(scope="session")
def host_tools() -> None:
    try:
        ensure_host_tools()
    except PackagingTestError as exc:
        pytest.fail(f"the packaging tests need lintian, rpmlint, rpm and busybox-static: {exc}")


@pytest.fixture(scope="session")
def packages(host_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Packages:
    """The .deb and .rpm of this tree, and a rebuild with a higher version for the upgrade test."""
    try:
        return build_all(tmp_path_factory.mktemp("dist"))
    except PackagingTestError as exc:
        pytest.fail(str(exc))
