"""Chat through the gateway with the official client: plain, streamed, and the model list."""

from common import check, client, digest, report

gateway = client()
messages = [{"role": "user", "content": "plain hello"}]
reply = gateway.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=16)
text = reply.choices[0].message.content
check(text.startswith(digest(messages)), f"plain reply belongs to its request: {text!r}")
check(reply.usage.completion_tokens > 0, f"usage: {reply.usage}")
check(reply.choices[0].finish_reason == "stop", f"finish_reason: {reply.choices[0].finish_reason}")

messages = [{"role": "user", "content": "streamed hello"}]
stream = gateway.chat.completions.create(
    model="gpt-4o",
    messages=messages,
    max_tokens=16,
    stream=True,
    stream_options={"include_usage": True},
)
pieces, finish, usage, chunks = [], None, None, 0
for chunk in stream:
    chunks += 1
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
    if chunk.usage:
        usage = chunk.usage
streamed = "".join(pieces)
check(streamed.startswith(digest(messages)), f"streamed reply belongs to its request: {streamed!r}")
check(len(pieces) > 1, f"deltas arrived one by one: {pieces}")
check(finish == "stop", f"finish_reason: {finish}")
check(usage is not None and usage.completion_tokens > 0, f"usage chunk: {usage}")

models = sorted(model.id for model in gateway.models.list())
report(chunks=chunks, deltas=len(pieces), models=models)
