"""The package version, here so that modules on any floor can read it without importing the package."""

__version__ = "0.1.0"
