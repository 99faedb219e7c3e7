"""Embeddings through the gateway with the official client: its default (base64, decoded by the
client) and floats, by model and by deployment name."""

from common import check, client, report

gateway = client()
inputs = ["alpha", "beta gamma"]
by_model = gateway.embeddings.create(model="embed", input=inputs)
floats = gateway.embeddings.create(model="embed-east", input=inputs, encoding_format="float")
for reply in (by_model, floats):
    check(len(reply.data) == len(inputs), f"one vector per input: {reply.data}")
    check([item.index for item in reply.data] == [0, 1], f"indices: {reply.data}")
    check(reply.usage.prompt_tokens > 0, f"usage: {reply.usage}")
report(
    base64=[item.embedding for item in by_model.data],
    floats=[item.embedding for item in floats.data],
)
