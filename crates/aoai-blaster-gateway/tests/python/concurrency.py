"""200 requests from 20 threads: each answer must belong to its own request."""

from concurrent.futures import ThreadPoolExecutor

from common import check, client, digest, report

gateway = client()


def ask(n):
    messages = [{"role": "user", "content": f"request number {n} of 200"}]
    reply = gateway.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=8)
    return n, reply.choices[0].message.content.startswith(digest(messages))


with ThreadPoolExecutor(max_workers=20) as pool:
    answers = list(pool.map(ask, range(200)))

mismatched = [n for n, own in answers if not own]
check(len(answers) == 200, f"{len(answers)} answers")
check(not mismatched, f"answers that belong to another request: {mismatched}")
report(answered=len(answers))
