"""Changes to samples: relabel, undo, flag (one or many), and evict/reinstate decisions.

Labels and flags belong to the dataset's samples, shared by every run over that dataset.
"""

from __future__ import annotations

from fastapi import APIRouter

from .. import changes, queries, schemas
from ..deps import AuthorDep, RunId, SampleId, WriteSessionDep

router = APIRouter(prefix="/runs/{run_id}/samples", tags=["labels"])


@router.post("/labels", response_model=schemas.ChangeResult)
def relabel_many(
    run_id: RunId, body: schemas.BulkLabelChange, session: WriteSessionDep, author: AuthorDep
) -> schemas.ChangeResult:
    context = queries.get_run(session, run_id)
    ids = changes.check_samples(context, body.sample_ids)
    changed = changes.set_labels(session, context, ids, body.label, body.note, author)
    session.commit()
    return schemas.ChangeResult(changed=len(changed), sample_ids=changed)


@router.post("/flags", response_model=schemas.ChangeResult)
def flag_many(
    run_id: RunId, body: schemas.BulkFlagChange, session: WriteSessionDep, author: AuthorDep
) -> schemas.ChangeResult:
    context = queries.get_run(session, run_id)
    ids = changes.check_samples(context, body.sample_ids)
    changed = changes.set_flags(session, context, ids, body.flagged, body.reason, author)
    session.commit()
    return schemas.ChangeResult(changed=len(changed), sample_ids=changed)


@router.post("/{sample_id}/label", response_model=schemas.SampleDetail)
def relabel(
    run_id: RunId,
    sample_id: SampleId,
    body: schemas.LabelChange,
    session: WriteSessionDep,
    author: AuthorDep,
) -> schemas.SampleDetail:
    context = queries.get_run(session, run_id)
    queries.check_sample(context, sample_id)
    changes.set_labels(session, context, [sample_id], body.label, body.note, author)
    session.commit()
    return queries.sample_detail(session, context, sample_id, "loss")


@router.post("/{sample_id}/label/undo", response_model=schemas.SampleDetail)
def undo_relabel(
    run_id: RunId, sample_id: SampleId, session: WriteSessionDep, author: AuthorDep
) -> schemas.SampleDetail:
    context = queries.get_run(session, run_id)
    queries.check_sample(context, sample_id)
    changes.undo_label(session, context, sample_id, author)
    session.commit()
    return queries.sample_detail(session, context, sample_id, "loss")


@router.post("/{sample_id}/flag", response_model=schemas.SampleDetail)
def flag(
    run_id: RunId,
    sample_id: SampleId,
    body: schemas.FlagChange,
    session: WriteSessionDep,
    author: AuthorDep,
) -> schemas.SampleDetail:
    context = queries.get_run(session, run_id)
    queries.check_sample(context, sample_id)
    changes.set_flags(session, context, [sample_id], body.flagged, body.reason, author)
    session.commit()
    return queries.sample_detail(session, context, sample_id, "loss")


@router.post("/{sample_id}/decision", response_model=schemas.ChangeResult)
def decide(
    run_id: RunId,
    sample_id: SampleId,
    body: schemas.Decision,
    session: WriteSessionDep,
    author: AuthorDep,
) -> schemas.ChangeResult:
    """Asks the running job to evict or reinstate the sample (applied at its next epoch)."""
    context = queries.get_run(session, run_id)
    queries.check_sample(context, sample_id)
    changes.decide(session, context, sample_id, body.action, author)
    session.commit()
    return schemas.ChangeResult(changed=1, sample_ids=[sample_id])
