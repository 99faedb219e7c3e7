"""What the scripts share: a client for the gateway under test, and the simulator's digest."""

import hashlib
import json
import os
import sys

import openai


def client(**options):
    """An OpenAI client for the gateway the Rust test started (GATEWAY_URL, GATEWAY_KEY)."""
    return openai.OpenAI(
        base_url=os.environ["GATEWAY_URL"],
        api_key=os.environ.get("GATEWAY_KEY", "unused"),
        **options,
    )


def digest(messages):
    """The digest the simulator's reply starts with: SHA-256 of the canonical messages JSON."""
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "digest=" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def check(condition, message):
    """Fails the script with `message` (the Rust test shows stderr)."""
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def report(**figures):
    """One JSON line on stdout for the Rust side."""
    print(json.dumps(figures), flush=True)
