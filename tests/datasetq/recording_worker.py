"""A recording training process for reliability tests (run with ``python -m``).

It draws, reports losses and records for a number of epochs or seconds, then prints a JSON line
with what it submitted. Options control speed so tests can kill it or make decisions mid-run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from datasetq import HeapqSampler, Recorder
from tests.datasetq.recording import TinyDataset, synthetic_loss


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=float("inf"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--epoch-sleep", type=float, default=0.0)
    parser.add_argument("--flush-interval", type=float, default=0.2)
    parser.add_argument("--lock-timeout", type=float, default=30.0)
    parser.add_argument("--close-timeout", type=float, default=120.0)
    parser.add_argument("--log-epochs", action="store_true")
    args = parser.parse_args()

    dataset = TinyDataset(args.n)
    recorder = Recorder(
        args.url,
        run=args.run,
        dataset=dataset,
        flush_interval=args.flush_interval,
        batch_rows=2000,
        record_visits=True,
        lock_timeout=args.lock_timeout,
        close_timeout=args.close_timeout,
    )
    start = time.monotonic()
    submitted = 0
    epochs_log = []
    closing = None
    with recorder:
        print(json.dumps({"recording": args.run}), flush=True)
        # greedy: every sample is drawn every epoch until evicted, which the tests count on
        sampler = HeapqSampler(
            dataset, recorder=recorder, seed=0, chunk_size=16, max_visits=50, policy="greedy"
        )
        epoch = 0
        while epoch < args.epochs and time.monotonic() - start < args.seconds:
            drawn = list(sampler)
            for i in range(0, len(drawn), args.batch):
                ids = drawn[i : i + args.batch]
                sampler.update(ids, {"loss": synthetic_loss(ids, epoch)})
                submitted += len(ids)
                if args.step_sleep:
                    time.sleep(args.step_sleep)
            if args.log_epochs:
                epochs_log.append(
                    {"epoch": epoch, "drawn": drawn, "labels": recorder.labels.tolist()}
                )
            epoch += 1
            if args.epoch_sleep:
                time.sleep(args.epoch_sleep)
        closing = time.monotonic()
    report = recorder.report
    print(
        json.dumps(
            {
                "submitted": submitted,
                "epochs": epochs_log,
                "epoch_count": epoch,
                "evicted": sampler.evicted.tolist(),
                "report_ok": bool(report and report.ok),
                "duplicates": report.duplicates if report else None,
                "close_seconds": time.monotonic() - closing if closing is not None else None,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
