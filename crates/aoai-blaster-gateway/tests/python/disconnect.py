"""A client that gives up (timeout) while its request waits: the job must never be sent.

The Rust side says when the first request is in flight upstream (so the second one queues
behind it, num_workers 1), and checks afterwards what the simulator received.
"""

import threading

import openai

from common import check, client, report

gateway = client(max_retries=0)
messages = [{"role": "user", "content": "first"}]
results = []
first = threading.Thread(
    target=lambda: results.append(gateway.chat.completions.create(model="gpt-4o", messages=messages))
)
first.start()
input()
try:
    gateway.with_options(timeout=0.5).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "impatient"}]
    )
    check(False, "the impatient request must time out")
except openai.APITimeoutError:
    pass
report(step="gave up")
first.join()
check(len(results) == 1, "the first request was answered")
report(step="done")
