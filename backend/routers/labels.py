"""Changes to samples: relabel, undo, flag (one or many), and evict/reinstate decisions.

Every change is an action of the review log (see ``/reviews``); labels, verdicts and flags
belong to the dataset's samples, shared by every run over that dataset.
"""

from __future__ import annotations

from datasetq.store import reviews, runs, samples

from .. import schemas
from ..deps import AuthorDep, RunId, SampleId, WriteSessionDep, api_router
from .samples import sample_detail

router = api_router("/runs/{run_id}/samples", "labels")


@router.post("/labels", response_model=schemas.ChangeResult, responses=schemas.NOT_FOUND)
def relabel_many(
    run_id: RunId, body: schemas.BulkLabelChange, session: WriteSessionDep, author: AuthorDep
) -> schemas.ChangeResult:
    run = runs.require_run(session, run_id)
    action = reviews.decide(
        session, run, "relabel", body.sample_ids, author, label=body.label, reason=body.note
    )
    session.commit()
    return schemas.ChangeResult(
        changed=len(action.changed), sample_ids=action.changed, action_id=action.id
    )


@router.post("/flags", response_model=schemas.ChangeResult, responses=schemas.NOT_FOUND)
def flag_many(
    run_id: RunId, body: schemas.BulkFlagChange, session: WriteSessionDep, author: AuthorDep
) -> schemas.ChangeResult:
    run = runs.require_run(session, run_id)
    kind: reviews.ReviewKind = "flag" if body.flagged else "unflag"
    action = reviews.decide(session, run, kind, body.sample_ids, author, reason=body.reason)
    session.commit()
    return schemas.ChangeResult(
        changed=len(action.changed), sample_ids=action.changed, action_id=action.id
    )


@router.post("/{sample_id}/label", response_model=schemas.SampleDetail, responses=schemas.NOT_FOUND)
def relabel(
    run_id: RunId,
    sample_id: SampleId,
    body: schemas.LabelChange,
    session: WriteSessionDep,
    author: AuthorDep,
) -> schemas.SampleDetail:
    run = runs.require_run(session, run_id)
    samples.check_sample(run, sample_id)
    reviews.check_label(run, body.label)
    if body.note is not None:
        reviews.set_note(session, run, sample_id, body.note)
    if samples.sample_label(session, run, sample_id) != body.label:
        # Saving a note with the current label is not a relabel.
        reviews.decide(
            session, run, "relabel", [sample_id], author, label=body.label, reason=body.note
        )
    session.commit()
    return sample_detail(session, run, sample_id)


@router.post(
    "/{sample_id}/label/undo",
    response_model=schemas.SampleDetail,
    responses={**schemas.NOT_FOUND, **schemas.CONFLICT},
)
def undo_relabel(
    run_id: RunId, sample_id: SampleId, session: WriteSessionDep, author: AuthorDep
) -> schemas.SampleDetail:
    """Undoes the latest relabel of this sample that still stands (``/reviews/undo`` steps
    back through a reviewer's actions instead)."""
    run = runs.require_run(session, run_id)
    samples.check_sample(run, sample_id)
    reviews.undo_latest_relabel(session, run, sample_id, author)
    session.commit()
    return sample_detail(session, run, sample_id)


@router.post("/{sample_id}/flag", response_model=schemas.SampleDetail, responses=schemas.NOT_FOUND)
def flag(
    run_id: RunId,
    sample_id: SampleId,
    body: schemas.FlagChange,
    session: WriteSessionDep,
    author: AuthorDep,
) -> schemas.SampleDetail:
    run = runs.require_run(session, run_id)
    samples.check_sample(run, sample_id)
    kind: reviews.ReviewKind = "flag" if body.flagged else "unflag"
    reviews.decide(session, run, kind, [sample_id], author, reason=body.reason)
    session.commit()
    return sample_detail(session, run, sample_id)


@router.post(
    "/{sample_id}/decision", response_model=schemas.ChangeResult, responses=schemas.NOT_FOUND
)
def decide(
    run_id: RunId,
    sample_id: SampleId,
    body: schemas.Decision,
    session: WriteSessionDep,
    author: AuthorDep,
) -> schemas.ChangeResult:
    """Asks the running job to evict or reinstate the sample (applied at its next epoch);
    for the export, record a ``drop`` or ``keep`` in ``/reviews`` instead."""
    run = runs.require_run(session, run_id)
    samples.check_sample(run, sample_id)
    reviews.queue_for_job(session, run.dataset.id, run.id, [sample_id], body.action, author)
    session.commit()
    return schemas.ChangeResult(changed=1, sample_ids=[sample_id])
