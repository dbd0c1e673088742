"""``python -m airflow_provider_noxus.emulator``: run the Noxus API emulator (see ``--help``)."""

from __future__ import annotations

from airflow_provider_noxus.emulator.cli import main

if __name__ == "__main__":
    main()
