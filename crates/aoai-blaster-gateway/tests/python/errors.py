"""Errors as the official client sees them: unknown model, bad key."""

import os

import openai

from common import check, client, report


def expect(call, exception, status, code):
    """Runs `call`, which must raise `exception` with this status and code; its message."""
    try:
        call()
    except exception as error:
        check(error.status_code == status, f"status {error.status_code}, expected {status}")
        check(error.code == code, f"code {error.code}, expected {code}")
        return str(error.message)
    check(False, f"expected {exception.__name__}")


messages = [{"role": "user", "content": "hi"}]
gateway = client(max_retries=0)
unknown = expect(
    lambda: gateway.chat.completions.create(model="gpt-5", messages=messages),
    openai.NotFoundError,
    404,
    "model_not_found",
)
intruder = openai.OpenAI(base_url=os.environ["GATEWAY_URL"], api_key="sk-wrong-0123456789", max_retries=0)
expect(
    lambda: intruder.chat.completions.create(model="gpt-4o", messages=messages),
    openai.AuthenticationError,
    401,
    "invalid_api_key",
)
report(unknown=unknown)
