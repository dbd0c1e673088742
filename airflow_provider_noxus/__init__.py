"""Apache Airflow provider for the Noxus AI platform."""

from __future__ import annotations

__version__ = "0.1.0"
