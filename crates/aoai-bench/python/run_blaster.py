"""Run one workload through the Python azure-openai-blaster and print what happened as JSON.

Driven by `cargo run --release -p aoai-bench --bin compare-python`, which installs the package
into a virtualenv under target/ and passes the run on stdin:

    {"config": {...AzureLLMBlaster config dict...}, "jobs": 3000, "timeout_s": 60,
     "start_at_epoch": 1790000000.0}

At `start_at_epoch` (Unix time) every job is submitted at once (`submit_chat_completion`), then the futures are awaited until
`timeout_s` has passed since the first submission. Output (one JSON line on stdout):
ok, failed, unfinished, elapsed_s (first submission to last result), cpu_s (this process, every
thread), errors (by exception type), worker_crashes (worker threads ended by an exception).
"""

import concurrent.futures
import json
import logging
import os
import sys
import threading
import time

from azure_openai_blaster import AzureLLMBlaster

crashes = []


def count_crash(args):
    crashes.append(type(args.exc_value).__name__)


def messages(i):
    return [
        {"role": "user", "content": f"Question number {i}: why does backoff matter?"},
    ]


def main():
    spec = json.load(sys.stdin)
    logging.basicConfig(level=logging.CRITICAL)
    threading.excepthook = count_crash
    blaster = AzureLLMBlaster.from_config(spec["config"])
    jobs = int(spec["jobs"])
    deadline_s = float(spec["timeout_s"])
    # Start when the Rust side starts too: the quota windows begin with the simulator.
    time.sleep(max(0.0, float(spec.get("start_at_epoch", 0.0)) - time.time()))

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    futures = [blaster.submit_chat_completion(messages(i)) for i in range(jobs)]
    ok = 0
    failed = 0
    errors = {}
    last = t0
    try:
        remaining = max(0.0, deadline_s - (time.perf_counter() - t0))
        for future in concurrent.futures.as_completed(futures, timeout=remaining):
            last = time.perf_counter()
            error = future.exception()
            if error is None:
                ok += 1
            else:
                failed += 1
                name = type(error).__name__
                errors[name] = errors.get(name, 0) + 1
    except concurrent.futures.TimeoutError:
        pass
    cpu = time.process_time() - cpu0
    result = {
        "ok": ok,
        "failed": failed,
        "unfinished": jobs - ok - failed,
        "elapsed_s": last - t0,
        "cpu_s": cpu,
        "errors": errors,
        "worker_crashes": len(crashes),
        "crash_types": sorted(set(crashes)),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    # Workers may be stuck on jobs that never end: leave without waiting for them.
    os._exit(0)


if __name__ == "__main__":
    main()
