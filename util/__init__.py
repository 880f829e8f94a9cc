"""Shared ground floor: configuration, data, metrics, inference, distributed and I/O helpers."""
