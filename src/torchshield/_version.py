"""The version, in one place: the package, bundles, reports and pyproject.toml read it here."""

__version__ = "0.1.0"
