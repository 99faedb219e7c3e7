"""A 429 from a full queue, retried by the official client after the wait the gateway named.

The gateway holds one request in flight and one queued (num_workers 1, queue_capacity 1) and
each takes a while upstream: the third request meets a full queue. An httpx2 hook records each
exchange, so the script proves the client waited at least `retry-after-ms` before retrying.
"""

import threading
import time

import openai

from common import check, client, report

exchanges = []


def seen(response):
    exchanges.append(
        (time.monotonic(), response.status_code, response.headers.get("retry-after-ms"))
    )


hooked = client(
    max_retries=3,
    http_client=openai.DefaultHttpxClient(event_hooks={"response": [seen]}),
)
plain = client(max_retries=0)
messages = [{"role": "user", "content": "wait your turn"}]
holders = [
    threading.Thread(target=lambda: plain.chat.completions.create(model="gpt-4o", messages=messages))
    for _ in range(2)
]
for holder in holders:
    holder.start()
# The Rust side tells when both holders are held by the gateway.
input()
raw = hooked.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
reply = raw.parse()
for holder in holders:
    holder.join()

statuses = [status for _, status, _ in exchanges]
check(statuses[0] == 429, f"the first try met the full queue: {statuses}")
check(statuses[-1] == 200, f"a retry succeeded: {statuses}")
for (at, status, wait_ms), (next_at, _, _) in zip(exchanges, exchanges[1:]):
    check(status == 429 and wait_ms is not None, f"only 429s are retried: {exchanges}")
    waited = (next_at - at) * 1000
    check(waited >= float(wait_ms) * 0.95, f"retried after {waited:.0f} ms, asked {wait_ms} ms")
check(reply.choices[0].message.content, "the retried request got its answer")
report(statuses=statuses, waits=[w for _, _, w in exchanges if w])
