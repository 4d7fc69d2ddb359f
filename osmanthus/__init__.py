"""Osmanthus: privacy-preserving federated credit-data gateway (shared core package)."""

__version__ = "0.1.0"
