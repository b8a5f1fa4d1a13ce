"""Folders that ship inside the installed package and sit at the top of a source checkout.

An installed wheel holds the dashboard and the migration scripts inside ``datasetq/``; a
checkout (and its editable install) keeps them in top-level folders beside ``datasetq/``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def bundled(installed: str, checkout: str) -> Path:
    """``datasetq/<installed>`` when the package holds it, else ``<checkout root>/<checkout>``."""
    inside = PACKAGE / installed
    return inside if inside.is_dir() else PACKAGE.parent / checkout


def migration_scripts() -> Path:
    """Alembic's script folder (``env.py`` and ``versions/``)."""
    return bundled("migrations", "alembic")


def dashboard_files() -> Path:
    """The dashboard's static files (``index.html``, ``js/``, ``app.css``)."""
    return bundled("server/static", "frontend")
