"""Errors as the official client sees them: unknown model, bad key."""

import os

import openai

from common import check, client, report

gateway = client(max_retries=0)
messages = [{"role": "user", "content": "hi"}]
try:
    gateway.chat.completions.create(model="gpt-5", messages=messages)
    check(False, "an unknown model must fail")
except openai.NotFoundError as error:
    check(error.status_code == 404, f"status {error.status_code}")
    check(error.code == "model_not_found", f"code {error.code}")
    unknown = str(error.message)

intruder = openai.OpenAI(base_url=os.environ["GATEWAY_URL"], api_key="sk-wrong-0123456789", max_retries=0)
try:
    intruder.chat.completions.create(model="gpt-4o", messages=messages)
    check(False, "a bad key must fail")
except openai.AuthenticationError as error:
    check(error.status_code == 401, f"status {error.status_code}")
    check(error.code == "invalid_api_key", f"code {error.code}")

report(unknown=unknown)
