"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_provider_noxus import __version__

INTEGRATION = "Noxus"
PACKAGE = "airflow_provider_noxus"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider: its connection type and form, hooks, operators, triggers, links
    and the ``@task.noxus`` TaskFlow decorator."""
    return {
        "package-name": "airflow-provider-noxus",
        "name": "Noxus",
        "description": "Run `Noxus <https://noxus.ai>`__ AI workflows from Airflow, deferrable by default.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://docs.noxus.ai",
                "tags": ["service"],
            }
        ],
        **{
            kind: [{"integration-name": INTEGRATION, "python-modules": [f"{PACKAGE}.{kind}.noxus"]}]
            for kind in ("hooks", "operators", "sensors", "triggers")
        },
        "extra-links": ["airflow_provider_noxus.links.noxus.NoxusRunLink"],
        "task-decorators": [{"name": "noxus", "class-name": f"{PACKAGE}.decorators.noxus.noxus_task"}],
        "asset-uris": [
            {
                "schemes": ["noxus"],
                "handler": f"{PACKAGE}.assets.sanitize_uri",
                "to_openlineage_converter": f"{PACKAGE}.assets.convert_asset_to_openlineage",
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_noxus.hooks.noxus.NoxusHook",
                "hook-name": "Noxus",
                "connection-type": "noxus",
                "conn-fields": {
                    "timeout": {
                        "label": "Request timeout (seconds)",
                        "schema": {"type": ["number", "null"], "default": 30, "minimum": 1, "maximum": 86400},
                        "description": "Longest one API request may take in all, and the event stream's "
                        "longest silence. The sync run endpoint always waits longer than the server's "
                        "120 s hold.",
                    },
                    "verify_ssl": {
                        "label": "Verify TLS certificates",
                        "schema": {"type": ["boolean", "null"], "default": True},
                        "description": "Turn off only for a self-hosted Noxus with a private certificate.",
                    },
                    "retry_attempts": {
                        "label": "Retry attempts",
                        "schema": {"type": ["integer", "null"], "default": 5, "minimum": 1, "maximum": 20},
                        "description": "Attempts per request, the first included, on transient errors "
                        "(timeouts, 429, 5xx). Run creation is retried only when it cannot have "
                        "created a run.",
                    },
                    "max_backoff": {
                        "label": "Maximum backoff (seconds)",
                        "schema": {"type": ["number", "null"], "default": 30, "minimum": 0},
                        "description": "Cap of one wait between retries, and of a server's Retry-After.",
                    },
                    "app_url": {
                        "label": "Noxus app URL",
                        "schema": {"type": ["string", "null"]},
                        "description": "Where the \"Noxus run\" links on task instances point. Leave empty "
                        "for https://app.noxus.ai (cloud API) or the base URL (self-hosted).",
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login", "extra"],
                    "relabeling": {"host": "Base URL", "password": "API key"},
                    "placeholders": {
                        "host": "https://backend.noxus.ai",
                        "password": "Noxus API key (Settings > API keys)",
                    },
                },
            }
        ],
    }
