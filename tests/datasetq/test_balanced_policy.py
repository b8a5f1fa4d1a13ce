"""The balanced policy (the default): coverage, pruning, extra draws, eviction on evidence, and
the suspicion score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datasetq import HeapqSampler, SamplerListener
from datasetq._balanced import _capped_draws_among, _capped_shares, first_reports, plan_epoch

N = 200
HARD = np.arange(20)  # ids whose given label the "model" rejects (mislabeled)


def capped_draws(draws: int, weights: np.ndarray, cap: int, rng: np.random.Generator):
    """Capped draws among every position of positive weight."""
    return _capped_draws_among(draws, np.flatnonzero(weights > 0), weights, cap, rng)


def report(sampler: HeapqSampler, ids: np.ndarray, loss_of, margin_of=None) -> None:
    """Reports ``loss_of(ids)`` (and ``margin_of(ids)``) for ``ids``."""
    metrics = {"loss": loss_of(ids)}
    if margin_of is not None:
        metrics["margin"] = margin_of(ids)
    sampler.update(ids, metrics)


def epoch_of(sampler: HeapqSampler, loss_of, margin_of=None, batch: int = 10) -> np.ndarray:
    """Draws one epoch, reporting ``loss_of(ids)`` (and ``margin_of``) after every batch."""
    drawn = np.array(list(sampler), dtype=np.int64)
    for start in range(0, len(drawn), batch):
        report(sampler, drawn[start : start + batch], loss_of, margin_of)
    return drawn


def noisy_loss(ids: np.ndarray) -> np.ndarray:
    """Mislabeled ids: loss 3 (probability of the given label about 0.05); others 0.01..0.5."""
    return np.where(np.isin(ids, HARD), 3.0, 0.01 + (ids % 50) / 100.0).astype(np.float32)


def test_default_policy_is_balanced_and_greedy_options_choose_greedy():
    assert HeapqSampler(range(10), seed=0).policy == "balanced"
    assert HeapqSampler(range(10), seed=0).evidence == 3
    assert HeapqSampler(range(10), seed=0, steps=2).policy == "greedy"
    assert HeapqSampler(range(10), seed=0, size=4).policy == "greedy"
    assert HeapqSampler(range(10), seed=0, extrema="max").policy == "greedy"
    assert HeapqSampler(range(10), seed=0, policy="greedy").evidence is None


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"policy": "tempered"}, "policy"),
        ({"policy": "balanced", "steps": 2}, "greedy"),
        ({"policy": "balanced", "extrema": "max"}, "greedy"),
        ({"prune": 1.0}, "prune"),
        ({"prune": "half"}, "prune"),
        ({"max_extra": 0}, "max_extra"),
        ({"evidence": 0}, "evidence"),
        ({"evidence": 1.5}, "evidence"),
    ],
)
def test_bad_policy_arguments_name_themselves(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        HeapqSampler(range(10), seed=0, **kwargs)


def test_every_live_sample_is_visited_unless_pruned_as_easy():
    sampler = HeapqSampler(range(N), seed=0, evidence=None)
    epoch_of(sampler, noisy_loss)  # warm-up: every sample once
    loss_before = sampler.loss.copy()
    drawn = epoch_of(sampler, noisy_loss)
    assert len(drawn) == N
    missing = np.setdiff1d(np.arange(N), drawn)
    assert len(missing)  # easy samples sat out (the prune share is 0.9)
    assert (loss_before[missing] < loss_before.mean()).all()
    assert np.isin(HARD, drawn).all()


def test_no_pruning_without_easy_samples_to_prune():
    sampler = HeapqSampler(range(N), seed=0, prune=0.0, evidence=None)
    epoch_of(sampler, noisy_loss)
    drawn = epoch_of(sampler, noisy_loss)
    assert set(drawn.tolist()) == set(range(N))


def test_samples_whose_label_is_rejected_get_no_extra_draws():
    """Losses only: a loss above ln 2 means the model rejects the label; those samples keep one
    visit per epoch while hard samples the model accepts get the extra draws."""
    sampler = HeapqSampler(range(N), seed=0, evidence=None, max_extra=1)
    epoch_of(sampler, noisy_loss)
    drawn = epoch_of(sampler, noisy_loss)
    counts = np.bincount(drawn, minlength=N)
    assert (counts[HARD] == 1).all()
    accepted_hard = np.setdiff1d(np.flatnonzero(noisy_loss(np.arange(N)) > 0.3), HARD)
    assert counts[accepted_hard].max() == 2  # max_extra=1
    assert counts.max() == 2


def test_a_reported_margin_decides_rejection_instead_of_the_loss():
    """A loss of 3 with a positive margin (a hard but accepted label) may get extra draws."""
    sampler = HeapqSampler(range(N), seed=0, evidence=None, max_extra=3)
    margin = lambda ids: np.ones(len(ids), dtype=np.float32)  # noqa: E731
    epoch_of(sampler, noisy_loss, margin)
    counts = np.bincount(epoch_of(sampler, noisy_loss, margin), minlength=N)
    assert counts[HARD].max() > 1


def test_evicts_after_evidence_wrong_coverage_visits_in_a_row_with_its_evidence():
    sampler = HeapqSampler(range(N), seed=0, evidence_odds=None)  # evidence=3
    for epoch in range(4):  # warm-up, then epochs 1, 2, 3 judge
        epoch_of(sampler, noisy_loss)
        if epoch < 3:
            assert len(sampler.evicted) == 0
    assert sampler.evicted.tolist() == HARD.tolist()
    ids, scores, since = sampler.eviction_evidence
    assert sorted(ids.tolist()) == HARD.tolist()
    np.testing.assert_allclose(scores, 3.0)
    assert (since == 1).all()  # wrong at every judged coverage visit since epoch 1
    _, epochs = sampler.evictions
    assert (epochs == 3).all()


def test_a_right_coverage_visit_restarts_the_evidence():
    # Every sample every epoch; a fixed count of visits, whatever the share rejected.
    sampler = HeapqSampler(range(N), seed=0, evidence=2, prune=0.0, evidence_odds=None)
    epoch_of(sampler, noisy_loss)
    epoch_of(sampler, noisy_loss)  # epoch 1: wrong
    epoch_of(sampler, lambda ids: np.full(len(ids), 0.1, np.float32))  # epoch 2: right
    epoch_of(sampler, noisy_loss)  # epoch 3: wrong once more
    assert len(sampler.evicted) == 0
    epoch_of(sampler, noisy_loss)  # epoch 4: twice in a row
    assert sampler.evicted.tolist() == HARD.tolist()
    assert (sampler.eviction_evidence[2] == 3).all()


def test_only_the_first_report_of_an_epoch_is_evidence_and_score():
    """Later reports in the same epoch (after training on the sample) change neither."""
    sampler = HeapqSampler(range(10), seed=0, prune=0.0, evidence=2)
    for _ in range(3):
        drawn = np.array(list(sampler))
        sampler.update(drawn, {"loss": np.full(10, 3.0, np.float32)})
        sampler.update(drawn, {"loss": np.full(10, 0.0, np.float32)})  # a second report
    assert len(sampler.evicted) == 10
    np.testing.assert_allclose(sampler.suspicion, 3.0)
    np.testing.assert_allclose(sampler.loss, 0.0)


def test_suspicion_is_not_inflated_by_extra_draws():
    """A sample drawn twice in an epoch counts once; in random order it is the mean loss."""
    sampler = HeapqSampler(range(4), seed=0, prune=0.0, evidence=None)
    reports = {0: [5.0, 1.0], 1: [2.0, 0.5]}  # epoch -> first report of sample 0 in it
    for epoch in range(2):
        list(sampler)
        sampler.update([0, 0, 1, 2, 3], {"loss": [reports[epoch][0], 9.0, 1.0, 1.0, 1.0]})
    assert sampler.suspicion[0] == pytest.approx((5.0 + 2.0) / 2)


def test_evidence_none_never_evicts_and_max_visits_keeps_its_meaning():
    sampler = HeapqSampler(range(N), seed=0, evidence=None)
    for _ in range(6):
        epoch_of(sampler, noisy_loss)
    assert len(sampler.evicted) == 0
    capped = HeapqSampler(range(N), seed=0, evidence=None, prune=0.9, max_extra=5, max_visits=2)
    epoch_of(capped, noisy_loss)
    drawn = epoch_of(capped, noisy_loss)
    counts = np.bincount(drawn, minlength=N)
    assert counts.max() <= 2
    assert set(capped.evicted.tolist()) == set(np.flatnonzero(counts >= 2).tolist())
    assert (capped.eviction_evidence[2] == -1).all()  # not evidence: the visit limit


def test_reinstate_restarts_the_evidence():
    sampler = HeapqSampler(range(N), seed=0, evidence=2, evidence_odds=None)
    for _ in range(3):
        epoch_of(sampler, noisy_loss)
    assert len(sampler.evicted) == len(HARD)
    sampler.reinstate(HARD)
    epoch_of(sampler, noisy_loss)  # one more wrong visit: not yet two in a row again
    assert len(sampler.evicted) == 0


def test_a_version_1_checkpoint_still_loads():
    sampler = HeapqSampler(range(N), seed=0, policy="greedy", max_visits=2)
    epoch_of(sampler, noisy_loss)
    epoch_of(sampler, noisy_loss)
    state = sampler.state_dict()
    old = {
        k: v
        for k, v in state.items()
        if k
        not in {
            "evicted_scores",
            "evicted_since",
            "plan",
            "coverage_seen",
            "coverage_loss_sum",
            "coverage_epochs",
            "wrong_streak",
            "wrong_since",
        }
    }
    old["version"] = 1
    resumed = HeapqSampler(range(N), seed=5, policy="greedy", max_visits=2)
    resumed.load_state_dict(old)
    assert resumed.evicted.tolist() == sampler.evicted.tolist()
    assert np.isnan(resumed.eviction_evidence[1]).all()
    assert list(resumed) == list(sampler)


def test_balanced_epochs_resume_mid_epoch_from_a_checkpoint():
    def run(stop: int | None):
        sampler = HeapqSampler(range(N), seed=3)
        drawn: list[int] = []
        for epoch in range(4 if stop is None else 5):  # the resumed epoch 2 is iterated twice
            iterator = iter(sampler)
            for step, index in enumerate(iterator):
                drawn.append(index)
                sampler.update([index], {"loss": noisy_loss(np.array([index]))})
                if stop is not None and epoch == 2 and step == stop:
                    state = sampler.state_dict()
                    resumed = HeapqSampler(range(N), seed=99)
                    resumed.load_state_dict(state)
                    sampler = resumed
                    break
        return drawn, sampler

    full, full_sampler = run(None)
    cut, cut_sampler = run(57)
    # The interrupted run re-enters epoch 2 where it stopped and continues it.
    assert len(full) == len(cut) == 4 * N
    assert full == cut
    assert full_sampler.evicted.tolist() == cut_sampler.evicted.tolist()


def test_cuda_and_tensor_inputs_are_evidence_too():
    sampler = HeapqSampler(range(N), seed=0, evidence=2, evidence_odds=None)
    for _ in range(3):
        drawn = np.array(list(sampler))
        loss = torch.from_numpy(noisy_loss(drawn))
        sampler.update(torch.from_numpy(drawn), {"loss": loss})
    assert sampler.evicted.tolist() == HARD.tolist()
    assert math.isclose(float(sampler.suspicion[0]), 3.0)


def test_a_weak_rejection_is_no_evidence_when_the_model_accepts_labels_confidently():
    """Margins of accepted labels around 10: a label rejected by 0.5 is a hard sample, not a
    wrong label, at the default reject_scale; a label rejected by 5 is evidence."""
    weak, strong = np.arange(10), np.arange(10, 20)

    def margin_of(ids):
        return np.where(np.isin(ids, weak), -0.5, np.where(np.isin(ids, strong), -5.0, 10.0))

    def loss_of(ids):
        return np.where(margin_of(ids) < 0, 2.0, 0.01).astype(np.float32)

    for scale, expected in ((0.25, strong), (0.0, np.arange(20))):
        sampler = HeapqSampler(range(N), seed=0, prune=0.0, reject_scale=scale, evidence_odds=None)
        for _ in range(4):
            epoch_of(sampler, loss_of, lambda ids: margin_of(ids).astype(np.float32))
        assert sampler.evicted.tolist() == expected.tolist(), scale


def test_losses_only_judge_by_the_labels_log_odds():
    """Without margins a loss of 3 (p = 0.05) against accepted losses of 0.01 is evidence."""
    sampler = HeapqSampler(range(N), seed=0, prune=0.0, evidence_odds=None)
    for _ in range(4):
        epoch_of(sampler, noisy_loss)
    assert sampler.evicted.tolist() == HARD.tolist()
    with pytest.raises(ValueError, match="reject_scale"):
        HeapqSampler(range(N), seed=0, reject_scale=-1)


def _weakly_doubted(doubted_in_epoch):
    """Margins for one epoch: ``HARD`` at -0.5 (doubted, far from the -2.5 a rejection needs
    at accepted margins of 10) where ``doubted_in_epoch``, else +10 like every other sample."""

    def margin_of(ids):
        return np.where(np.isin(ids, HARD) & doubted_in_epoch, -0.5, 10.0).astype(np.float32)

    def loss_of(ids):
        return np.where(margin_of(ids) < 0, 1.0, 0.01).astype(np.float32)

    return loss_of, margin_of


def test_weak_doubts_that_persist_evict_with_their_evidence():
    """Pair-flip noise: the model finds the label slightly less likely than another, epoch
    after epoch, and never rejects it strongly. Five doubting coverage visits evict."""
    # evidence 3, doubt_evidence 5, whatever the share rejected
    sampler = HeapqSampler(range(N), seed=0, prune=0.0, evidence_odds=None)
    assert sampler.doubt_evidence == 5
    epoch_of(sampler, *_weakly_doubted(True))  # warm-up: no evidence
    for epoch in range(1, 6):
        epoch_of(sampler, *_weakly_doubted(True))
        assert len(sampler.evicted) == (len(HARD) if epoch == 5 else 0), epoch
    ids, _, since = sampler.eviction_evidence
    assert sorted(ids.tolist()) == HARD.tolist()
    assert (since == 1).all()
    assert (sampler.evictions[1] == 5).all()


def test_an_accepting_visit_lowers_the_doubts_by_one_instead_of_clearing_them():
    sampler = HeapqSampler(range(N), seed=0, prune=0.0, doubt_evidence=3, evidence_odds=None)
    pattern = [True, True, False, True, True]  # epochs 1-5: tally 1, 2, 1, 2, 3
    epoch_of(sampler, *_weakly_doubted(True))
    for epoch, doubted in enumerate(pattern, start=1):
        epoch_of(sampler, *_weakly_doubted(doubted))
        assert len(sampler.evicted) == (len(HARD) if epoch == 5 else 0), epoch
    # A streak rule would have restarted at epoch 4: its evidence begins at 1, not 4.
    assert (sampler.eviction_evidence[2] == 1).all()


def test_doubts_alone_never_evict_when_turned_off():
    for kwargs in ({"doubt_evidence": None}, {"evidence": None}):
        sampler = HeapqSampler(range(N), seed=0, prune=0.0, **kwargs)
        for _ in range(8):
            epoch_of(sampler, *_weakly_doubted(True))
        assert len(sampler.evicted) == 0, kwargs
    assert HeapqSampler(range(N), seed=0, evidence=None).doubt_evidence is None
    assert HeapqSampler(range(N), seed=0, evidence=4).doubt_evidence == 6
    assert HeapqSampler(range(N), seed=0, policy="greedy").doubt_evidence is None
    with pytest.raises(ValueError, match="doubt_evidence"):
        HeapqSampler(range(N), seed=0, doubt_evidence=0)


_ADDED_IN_VERSION_4 = {"coverage_visit_counts", "evidence_extra"}


def _rejecting(wrong: np.ndarray):
    """Metrics for one epoch: ``wrong`` ids rejected strongly (margin -5), the rest accepted
    with margin +10."""

    def margin_of(ids):
        return np.where(np.isin(ids, wrong), -5.0, 10.0).astype(np.float32)

    def loss_of(ids):
        return np.where(np.isin(ids, wrong), 3.0, 0.01).astype(np.float32)

    return loss_of, margin_of


def _evicted_after_each_epoch(sampler: HeapqSampler, wrong: np.ndarray, epochs: int) -> list:
    counts = []
    for _ in range(epochs):
        epoch_of(sampler, *_rejecting(wrong))
        counts.append(len(sampler.evicted))
    return counts


def test_when_many_labels_are_rejected_evidence_visits_in_a_row_evict():
    """40% rejected: prior odds 2 : 3, and three rejections in a row take them past 4 : 1."""
    sampler = HeapqSampler(range(N), seed=0, prune=0.0)
    assert sampler.evidence_odds == 4.0
    assert _evicted_after_each_epoch(sampler, np.arange(80), 4) == [0, 0, 0, 80]


@pytest.mark.parametrize(("odds", "visits"), [(4.0, 9), (1.0, 7), (None, 3)])
def test_rare_rejections_need_more_visits_in_a_row(odds, visits):
    """1 label in 100 rejected: prior odds 1 : 99, doubled by each rejecting visit in a row,
    reach 4 : 1 after ceil(log2(4 * 99)) = 9 visits (1 : 1 after 7); without odds, ``evidence``
    visits evict whatever the share. The warm-up's share sets the first judged epoch's prior."""
    sampler = HeapqSampler(range(N), seed=0, prune=0.0, evidence_odds=odds)
    counts = _evicted_after_each_epoch(sampler, np.arange(2), 11)
    assert counts.index(2) == visits  # epochs 1 to ``visits`` judged
    assert set(counts[:visits]) == {0}


def test_the_doubt_tally_needs_as_many_more_visits():
    """Weak doubts of 10% of the labels: prior odds 1 : 9 need ceil(log2(36)) = 6 visits, 3
    more than ``evidence``: 6 rejections in a row (with reject_scale=0 every doubt rejects) or,
    with rejections too weak to count, a doubt tally of 5 + 3 = 8."""
    sampler = HeapqSampler(range(N), seed=0, prune=0.0, reject_scale=0.0)
    epoch_of(sampler, *_weakly_doubted(True))
    for epoch in range(1, 10):
        epoch_of(sampler, *_weakly_doubted(True))
        assert len(sampler.evicted) == (len(HARD) if epoch >= 6 else 0), epoch
    doubting = HeapqSampler(range(N), seed=0, prune=0.0)  # the default reject_scale: no rejections
    for epoch in range(10):
        epoch_of(doubting, *_weakly_doubted(True))
        assert len(doubting.evicted) == (len(HARD) if epoch >= 8 else 0), epoch


def test_evicted_samples_count_as_rejected_in_the_prior():
    """Once 80 of 200 labels are evicted, two more labels rejected are judged against a share
    of 82 in 200, not 2 in the 120 still drawn: three visits in a row evict them too."""
    sampler = HeapqSampler(range(N), seed=0, prune=0.0)
    first, later = np.arange(80), np.array([100, 101])
    assert _evicted_after_each_epoch(sampler, first, 4) == [0, 0, 0, 80]
    counts = _evicted_after_each_epoch(sampler, np.concatenate([first, later]), 3)
    assert counts == [80, 80, 82]


def test_the_evidence_prior_resumes_from_a_checkpoint():
    wrong = np.arange(2)

    def run(stop: bool) -> list:
        sampler = HeapqSampler(range(N), seed=0, prune=0.0)
        counts = []
        for epoch in range(11):
            if stop and epoch == 5:
                iterator = iter(sampler)
                report(sampler, np.array([next(iterator) for _ in range(57)]), *_rejecting(wrong))
                resumed = HeapqSampler(range(N), seed=0, prune=0.0)
                resumed.load_state_dict(sampler.state_dict())
                sampler = resumed
                report(sampler, np.array(list(sampler)), *_rejecting(wrong))
            else:
                epoch_of(sampler, *_rejecting(wrong))
            counts.append(len(sampler.evicted))
        return counts

    uninterrupted = run(stop=False)
    assert run(stop=True) == uninterrupted
    assert uninterrupted.index(2) == 9


def test_a_version_3_checkpoint_judges_with_fixed_evidence_until_the_next_epoch():
    sampler = HeapqSampler(range(N), seed=0, prune=0.0)
    _evicted_after_each_epoch(sampler, np.arange(2), 3)
    state = sampler.state_dict()
    assert sampler._coverage.extra.tolist() == [6, 6]
    old = {k: v for k, v in state.items() if k not in _ADDED_IN_VERSION_4}
    old["version"] = 3
    resumed = HeapqSampler(range(N), seed=0, prune=0.0)
    resumed.load_state_dict(old)
    assert resumed._coverage.extra.tolist() == [0, 0]
    epoch_of(resumed, *_rejecting(np.arange(2)))  # epoch 3: a third rejection in a row evicts
    assert len(resumed.evicted) == 2


@pytest.mark.parametrize("odds", [0, -1.0, math.inf, math.nan, "4", True])
def test_bad_evidence_odds_name_themselves(odds):
    with pytest.raises(ValueError, match="evidence_odds"):
        HeapqSampler(range(N), seed=0, evidence_odds=odds)


def test_reinstate_forgets_the_doubts_too():
    sampler = HeapqSampler(range(N), seed=0, prune=0.0, doubt_evidence=2, evidence_odds=None)
    for _ in range(3):
        epoch_of(sampler, *_weakly_doubted(True))
    assert sampler.evicted.tolist() == HARD.tolist()
    sampler.reinstate(HARD)
    epoch_of(sampler, *_weakly_doubted(True))  # one doubt: not yet two again
    assert len(sampler.evicted) == 0
    epoch_of(sampler, *_weakly_doubted(True))
    assert sampler.evicted.tolist() == HARD.tolist()


def test_a_version_2_checkpoint_loads_without_doubts():
    sampler = HeapqSampler(range(N), seed=0, prune=0.0, evidence_odds=None)
    for _ in range(3):
        epoch_of(sampler, *_weakly_doubted(True))
    state = sampler.state_dict()
    assert state["version"] == 4
    old = {k: v for k, v in state.items() if k not in _ADDED_IN_VERSION_4 | {"doubt_tally"}}
    old["version"] = 2
    resumed = HeapqSampler(range(N), seed=0, prune=0.0, evidence_odds=None)
    resumed.load_state_dict(old)
    assert (resumed._coverage.doubted == 0).all()
    assert (resumed._coverage.since == -1).all()  # no lead, so no epoch it began in
    epoch_of(resumed, *_weakly_doubted(True))  # its doubts count again from here
    assert len(resumed.evicted) == 0
    assert (resumed._coverage.since[HARD] == 3).all()
    full = HeapqSampler(range(N), seed=0, prune=0.0, evidence_odds=None)
    full.load_state_dict(state)
    for epoch in (3, 4, 5):  # the doubts of epochs 1 and 2 were carried
        epoch_of(full, *_weakly_doubted(True))
        assert len(full.evicted) == (len(HARD) if epoch == 5 else 0), epoch


def test_draw_counts_include_every_repeat_of_a_sample_within_a_chunk():
    """More draws than samples: the plan repeats samples, often within one chunk."""
    sampler = HeapqSampler(range(N), seed=0, num_samples=5 * N, chunk_size=512)
    epoch_of(sampler, noisy_loss)
    visits_before = sampler.visits.copy()
    drawn = epoch_of(sampler, noisy_loss)
    per_sample = np.bincount(drawn, minlength=N)
    assert per_sample.max() > 1
    assert (sampler.epoch_visits == per_sample).all()
    assert (sampler.visits - visits_before == per_sample).all()


def test_draws_in_an_epoch_beyond_the_uint16_range_saturate_the_epoch_count_only():
    sampler = HeapqSampler(range(3), seed=0, num_samples=3 * 70_000, chunk_size=1 << 15)
    epoch_of(sampler, noisy_loss, batch=1 << 15)  # warm-up: 70,000 draws of each
    drawn = epoch_of(sampler, noisy_loss, batch=1 << 15)
    per_sample = np.bincount(drawn, minlength=3)
    assert per_sample.max() > np.iinfo(np.uint16).max
    assert (sampler.epoch_visits == np.minimum(per_sample, np.iinfo(np.uint16).max)).all()
    assert (sampler.visits == 70_000 + per_sample).all()


def test_max_visits_evicts_a_sample_repeated_within_a_chunk_once():
    sampler = HeapqSampler(range(N), seed=0, num_samples=2 * N, max_visits=3, evidence=None)
    epoch_of(sampler, noisy_loss)
    drawn = epoch_of(sampler, noisy_loss)
    evicted, _ = sampler.evictions  # one record per eviction
    assert len(evicted)
    assert len(np.unique(evicted)) == len(evicted)
    assert (np.bincount(drawn, minlength=N)[evicted] >= 3).all()


@pytest.mark.parametrize("n", [1, 3200, 5000, 2**40, 2**61])
def test_first_reports_finds_each_ids_first_position(n):
    """Sparse reports are sorted, dense ones (from n / 32 on: 100 of 3,200) scattered."""
    rng = np.random.default_rng(n % 1000)
    for count in (1, 2, 7, 99, 100, 300, 4096):
        ids = rng.integers(0, n, count, dtype=np.int64)
        unique, first = first_reports(ids, n)
        expected_unique, expected_first = np.unique(ids, return_index=True)
        assert unique.tolist() == expected_unique.tolist()
        assert first.tolist() == expected_first.tolist()


def test_extra_draws_follow_the_weights_up_to_the_cap_and_spend_every_draw():
    rng = np.random.default_rng(0)
    weights = rng.random(300).astype(np.float32)
    weights[rng.random(300) < 0.2] = 0.0  # suspects and unscored: never an extra draw
    weights[:5] = 40.0  # heavy enough to reach the cap
    positive = np.flatnonzero(weights > 0)
    draws, cap = 250, 3
    expected = np.zeros(300)
    expected[positive] = _capped_shares(weights[positive].astype(np.float64), draws, cap)
    assert (expected[:5] == cap).all()
    assert math.isclose(expected.sum(), draws)
    total = np.zeros(300)
    for _ in range(4000):
        counts = np.bincount(capped_draws(draws, weights, cap, rng), minlength=300)
        assert counts.sum() == draws
        assert counts.max() <= cap
        assert (counts[weights == 0] == 0).all()
        # Systematic sampling: each count is its expected count rounded down or up.
        assert (np.abs(counts - expected) < 1).all()
        total += counts
    np.testing.assert_allclose(total / 4000, expected, atol=0.05)


def test_draws_left_once_hard_samples_reach_their_cap_skip_doubted_labels():
    """With few accepted hard samples and a small cap, the draws left over are spread uniformly,
    over the labels the model does not doubt; every label doubted: over all."""
    live = np.arange(0, 2000, 2, dtype=np.int64)  # every other id evicted
    loss = np.full(len(live), 0.1, dtype=np.float32)
    loss[:10] = 2.0  # hard, accepted: capped at one extra draw each
    suspect = np.zeros(len(live), dtype=bool)
    suspect[500:] = True  # doubted labels: their coverage visit only
    loss[500:] = 3.0
    for seed in range(20):
        planned, most = plan_epoch(
            live, loss, suspect, 1600, np.random.default_rng(seed), 0.9, 1, np.int32
        )
        assert planned.dtype == np.int32
        assert len(planned) == 1600
        counts = np.bincount(planned, minlength=2000)[live]
        assert (counts[suspect] == 1).all()  # no extra draw, fill included
        assert (counts[:10] >= 2).all()
        assert counts.max() <= most
    everyone_doubted = np.ones(len(live), dtype=bool)
    planned, _ = plan_epoch(live, loss, everyone_doubted, 1600, np.random.default_rng(0), 0.9, 1)
    assert len(planned) == 1600
    assert np.isin(planned, live).all()


def test_extra_draws_stop_at_the_cap_of_every_candidate():
    weights = np.array([0.0, 1.0, 2.0, 0.0, 5.0], dtype=np.float32)
    drawn = capped_draws(100, weights, 2, np.random.default_rng(0))
    assert sorted(drawn.tolist()) == [1, 1, 2, 2, 4, 4]
    assert len(capped_draws(0, weights, 2, np.random.default_rng(0))) == 0


@pytest.mark.parametrize("kind", ["geometric", "heavy-tailed", "equal"])
def test_capped_shares_agree_with_the_exact_solution_by_sorting(kind):
    """The passes and the sort (the way out when passes do not settle) give the same shares."""
    rng = np.random.default_rng(len(kind))
    for _ in range(50):
        m = int(rng.integers(2, 400))
        if kind == "geometric":  # weights spread over hundreds of octaves
            weights = 2.0 ** -np.arange(m, dtype=np.float64)
        elif kind == "heavy-tailed":
            weights = rng.pareto(0.3, m) + 1e-6
        else:
            weights = np.ones(m)
        cap = int(rng.integers(1, 5))
        draws = int(rng.integers(1, cap * m))
        by_passes = _capped_shares(weights, draws, cap)
        by_sorting = _capped_shares(weights, draws, cap, passes=0)
        np.testing.assert_allclose(by_passes, by_sorting, rtol=1e-9)
        assert math.isclose(by_sorting.sum(), draws, rel_tol=1e-9)
        assert by_sorting.max() <= cap * (1 + 1e-12)
        # Uncapped shares stay proportional to their weights.
        free = by_sorting < cap * (1 - 1e-9)
        if free.sum() > 1:
            ratio = by_sorting[free] / weights[free]
            np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)


def test_epoch_visits_count_replacements_for_samples_evicted_mid_epoch():
    """Planned draws of a sample evicted mid-epoch are replaced from the base order; the
    epoch's counts (kept without an overflow check while they cannot pass uint16) stay exact."""
    sampler = HeapqSampler(range(N), seed=0, num_samples=3 * N, chunk_size=64)
    epoch_of(sampler, noisy_loss)
    iterator = iter(sampler)
    first = [next(iterator) for _ in range(64)]
    sampler.evict(np.arange(N // 2))
    drawn = np.array(first + list(iterator))
    assert (sampler.epoch_visits == np.bincount(drawn, minlength=N)).all()


class _Counting(SamplerListener):
    def __init__(self) -> None:
        self.updates = 0

    def on_update(
        self, sampler: HeapqSampler, ids: np.ndarray, metrics: dict[str, np.ndarray]
    ) -> None:
        self.updates += 1


def test_updates_wait_for_the_epochs_end_without_a_listener_and_draw_the_same():
    """The balanced policy plans each epoch ahead: applying a loop's updates at the epoch's
    end (no listener) instead of at every chunk (a listener streams them) changes no draw, no
    eviction and no score, here with evictions on evidence in the middle of epochs. (Draws can
    differ only where the plan visits a sample again after the visit that evicts it, which
    needs draws beyond every accepted sample's cap: per chunk, that visit is replaced from the
    base order; deferred, it is drawn.)"""
    ambiguous = np.arange(20, 40)  # doubted at odd epochs only

    def train(sampler: HeapqSampler, epochs: int) -> tuple[list[int], list[int]]:
        drawn, pending_mid_epoch = [], []
        for epoch in range(epochs):
            batch: list[int] = []
            for index in sampler:
                batch.append(index)
                if len(batch) < 10:
                    continue
                ids = np.array(batch)
                margin = np.where(np.isin(ids, HARD), -5.0, 2.0 + (ids % 7) / 7)
                margin[np.isin(ids, ambiguous)] = -0.5 if epoch % 2 else 0.5
                loss = np.log1p(np.exp(-margin)).astype(np.float32)
                sampler.update(batch, {"loss": loss, "margin": margin.astype(np.float32)})
                drawn.extend(batch)
                pending_mid_epoch.append(sampler._pending_count)
                batch = []
        return drawn, pending_mid_epoch

    streamed, deferred = (
        HeapqSampler(range(N), seed=3, chunk_size=16),
        HeapqSampler(range(N), seed=3, chunk_size=16),
    )
    listener = _Counting()
    streamed.listener = listener
    drawn_streamed, pending_streamed = train(streamed, 7)
    drawn_deferred, pending_deferred = train(deferred, 7)
    assert drawn_streamed == drawn_deferred
    assert np.array_equal(streamed.evicted, deferred.evicted)
    assert set(streamed.evicted.tolist()) >= set(HARD.tolist())  # evicted mid-epoch
    # Evictions of one epoch are recorded as they are applied: compare them by id.
    for ours, theirs in [
        (streamed.evictions, deferred.evictions),
        (streamed.eviction_evidence, deferred.eviction_evidence),
    ]:
        order_ours, order_theirs = np.argsort(ours[0]), np.argsort(theirs[0])
        for a, b in zip(ours, theirs, strict=True):
            assert np.array_equal(a[order_ours], b[order_theirs])
    assert np.array_equal(streamed.suspicion, deferred.suspicion, equal_nan=True)
    # What differs is only when updates are applied: a chunk at a time, or once an epoch.
    assert listener.updates > 7 * N // 16 // 2
    assert max(pending_streamed) <= 16 + 10
    assert max(pending_deferred) >= N - 10
