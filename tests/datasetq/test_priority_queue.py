import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from datasetq import _priority_queue as pq
from datasetq._priority_queue import PriorityRuns, float_keys, pack, unpack_ids, unpack_keys


@given(st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=200))
def test_float_keys_preserve_order(values):
    array = np.array(values, dtype=np.float32)
    ascending = float_keys(array, descending=False).astype(np.int64)
    descending = float_keys(array, descending=True).astype(np.int64)
    for i in range(len(array)):
        for j in range(len(array)):
            if array[i] < array[j]:
                assert ascending[i] < ascending[j]
                assert descending[i] > descending[j]


def test_pack_roundtrip():
    keys = np.array([0, 5, 2**32 - 1], dtype=np.uint32)
    ids = np.array([7, 0, 2**32 - 1], dtype=np.int64)
    entries = pack(keys, ids)
    assert unpack_ids(entries).tolist() == ids.tolist()
    assert unpack_keys(entries).tolist() == keys.tolist()


@given(
    st.lists(
        st.one_of(
            st.lists(st.integers(0, 2**20), min_size=0, max_size=50).map(lambda v: ("push", v)),
            st.integers(1, 40).map(lambda k: ("pop", k)),
        ),
        max_size=60,
    )
)
def test_runs_behave_like_a_sorted_multiset(operations):
    # Tiny capacities force many levels and merges.
    original = pq._BASE_CAPACITY, pq._GROWTH
    pq._BASE_CAPACITY, pq._GROWTH = 4, 2
    try:
        runs, model = PriorityRuns(), []
        for op, arg in operations:
            if op == "push":
                runs.push(np.array(arg, dtype=np.uint64))
                model.extend(set(arg))  # identical entries of one batch are kept once
            else:
                popped = runs.pop(arg).tolist()
                model.sort()
                expected = model[:arg]
                # Equal values may all come out together.
                extra = [v for v in model[arg:] if expected and v == expected[-1]]
                assert popped[: len(expected)] == expected
                assert popped[len(expected) :] == extra[: len(popped) - len(expected)]
                del model[: len(popped)]
            assert len(runs) == len(model)
        assert sorted(runs.entries().tolist()) == sorted(model)
    finally:
        pq._BASE_CAPACITY, pq._GROWTH = original
