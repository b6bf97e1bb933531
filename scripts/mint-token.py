#!/usr/bin/env python3
"""Mints a user token as an app's backend does: an HS256 JWT signed with the client's secret.

    python3 scripts/mint-token.py --client demo-web --user alice --secret "$SIGNING_KEY" [--ttl 600] [--rpm 5]

Standard library only; a backend would do the same in a few lines (see README, User tokens).
"""
import argparse
import base64
import hashlib
import hmac
import json
import time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(client: str, user: str, secret: str, ttl: int = 600, **limits) -> str:
    now = int(time.time())
    claims = {"iss": client, "sub": user, "iat": now, "exp": now + ttl}
    claims.update({k: v for k, v in limits.items() if v is not None})
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--client", required=True, help="the client id (the token's iss)")
    p.add_argument("--user", required=True, help="the user id (the token's sub)")
    p.add_argument("--secret", required=True, help="the client's signing secret")
    p.add_argument("--ttl", type=int, default=600, help="lifetime in seconds (default 600)")
    p.add_argument("--rpm", type=int, help="the user's requests per minute")
    p.add_argument("--tpm", type=int, help="the user's tokens per minute")
    p.add_argument("--daily-tokens", type=int, help="the user's tokens per UTC day")
    a = p.parse_args()
    print(mint(a.client, a.user, a.secret, a.ttl, rpm=a.rpm, tpm=a.tpm, daily_tokens=a.daily_tokens))
