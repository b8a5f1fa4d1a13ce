"""Runs: the list, and one run's summary for the overview charts."""

from __future__ import annotations

from fastapi import APIRouter

from .. import queries, schemas
from ..deps import RunId, SessionDep

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("", response_model=list[schemas.RunPublic])
def list_runs(session: SessionDep) -> list[schemas.RunPublic]:
    return queries.list_runs(session)


@router.get("/{run_id}", response_model=schemas.RunSummary)
def get_run(run_id: RunId, session: SessionDep) -> schemas.RunSummary:
    return queries.run_summary(session, queries.get_run(session, run_id))
