"""Installed package versions, as the records (artifact manifest, bench record, eval results) report them."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata


def package_versions(packages: Iterable[str], missing: str | None = None) -> dict[str, str | None]:
    """{package: installed version}, `missing` for a package that is not installed."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = missing
    return versions
