"""The Responses API through the gateway with the official client: a plain response, then a
streamed one, event by event as the SDK types them."""

from common import check, client, report

gateway = client()
plain = gateway.responses.create(model="gpt-4o", input="Say hi")
check(plain.output_text, f"plain output text: {plain}")

kinds = []
deltas = []
final = None
stream = gateway.responses.create(model="gpt-4o", input="Stream please", stream=True)
for event in stream:
    kinds.append(event.type)
    if event.type == "response.output_text.delta":
        deltas.append(event.delta)
    elif event.type == "response.completed":
        final = event.response
check(kinds[0] == "response.created", f"first event: {kinds}")
check(kinds[-1] == "response.completed", f"last event: {kinds}")
check(final is not None and final.output_text == "".join(deltas), f"deltas vs final: {kinds}")
report(plain=plain.output_text, streamed="".join(deltas), deltas=len(deltas), events=len(kinds))
