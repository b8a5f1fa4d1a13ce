"""Changes to samples: relabel, undo, flag (one or many), and evict/reinstate decisions.

Every change is an action of the review log (see ``/reviews``); labels, verdicts and flags
belong to the dataset's samples, shared by every run over that dataset.
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
    action = changes.act(
        session, context, "relabel", body.sample_ids, author, label=body.label, reason=body.note
    )
    session.commit()
    return schemas.ChangeResult(
        changed=len(action.changed), sample_ids=action.changed, action_id=action.id
    )


@router.post("/flags", response_model=schemas.ChangeResult)
def flag_many(
    run_id: RunId, body: schemas.BulkFlagChange, session: WriteSessionDep, author: AuthorDep
) -> schemas.ChangeResult:
    context = queries.get_run(session, run_id)
    action = changes.act(
        session,
        context,
        "flag" if body.flagged else "unflag",
        body.sample_ids,
        author,
        reason=body.reason,
    )
    session.commit()
    return schemas.ChangeResult(
        changed=len(action.changed), sample_ids=action.changed, action_id=action.id
    )


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
    current = queries.sample_label(session, context, sample_id)
    if body.note is not None:
        changes.set_note(session, context, sample_id, body.note)
    if current != body.label:  # saving a note with the current label is not a relabel
        changes.act(
            session, context, "relabel", [sample_id], author, label=body.label, reason=body.note
        )
    else:
        changes.check_label(context, body.label)
    session.commit()
    return queries.sample_detail(session, context, sample_id, "loss")


@router.post("/{sample_id}/label/undo", response_model=schemas.SampleDetail)
def undo_relabel(
    run_id: RunId, sample_id: SampleId, session: WriteSessionDep, author: AuthorDep
) -> schemas.SampleDetail:
    """Undoes the latest relabel of this sample that still stands (``/reviews/undo`` steps
    back through a reviewer's actions instead)."""
    context = queries.get_run(session, run_id)
    queries.check_sample(context, sample_id)
    changes.undo_latest_relabel(session, context, sample_id, author)
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
    changes.act(
        session,
        context,
        "flag" if body.flagged else "unflag",
        [sample_id],
        author,
        reason=body.reason,
    )
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
    """Asks the running job to evict or reinstate the sample (applied at its next epoch);
    for the export, record a ``drop`` or ``keep`` in ``/reviews`` instead."""
    context = queries.get_run(session, run_id)
    queries.check_sample(context, sample_id)
    changes.decide(session, context, sample_id, body.action, author)
    session.commit()
    return schemas.ChangeResult(changed=1, sample_ids=[sample_id])
