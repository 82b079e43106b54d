"""Who may call the HTTP server: loopback binds keep the SDK's Host/Origin checks; any other bind needs a token.

Binding 127.0.0.1, ::1 or localhost, the SDK validates Host and Origin against those names (a DNS-rebinding
page gets 421/403). Any other address, even 127.0.0.2, may be reachable from other users or machines, so
the server refuses to start there without a bearer token (`--auth-token-file FILE` or $MODELDELTA_MCP_TOKEN),
and then the SDK's own bearer middleware answers 401 to every request without `Authorization: Bearer <token>`.
A token, once given, is required on loopback too. It is compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from modeldelta_mcp.errors import ModelDeltaError

TOKEN_ENV = "MODELDELTA_MCP_TOKEN"
# The bind names the SDK protects with its Host/Origin allow-lists (mcp.server.lowlevel streamable_http_app).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Shorter tokens are guessable over a network; `openssl rand -hex 32` gives 64 characters.
MIN_TOKEN_CHARS = 16
# The issuer URL the SDK's AuthSettings requires; nothing is served there (no OAuth provider is configured).
ISSUER_PLACEHOLDER = "http://localhost"


class StaticTokenVerifier:
    """The SDK's TokenVerifier for one shared secret."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if not hmac.compare_digest(token.encode(), self._token):
            return None
        # The AccessToken lands in the request scope; it carries no copy of the secret.
        return AccessToken(token="<bearer>", client_id="modeldelta-token", scopes=[])


def read_token(token_file: Path | None) -> str | None:
    """The token from --auth-token-file, else from $MODELDELTA_MCP_TOKEN, else None. Messages never show it."""
    if token_file is not None:
        try:
            token = token_file.expanduser().read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelDeltaError(f"--auth-token-file {token_file}: unreadable ({type(exc).__name__})") from exc
        source = f"--auth-token-file {token_file}"
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
        source = f"${TOKEN_ENV}"
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ModelDeltaError(f"{source}: the token must be at least {MIN_TOKEN_CHARS} characters without spaces")
    return token


def is_loopback_name(host: str) -> bool:
    return host in LOOPBACK_HOSTS


def auth_for(host: str, token: str | None) -> dict[str, Any]:
    """MCPServer keyword arguments for serving on `host`: the SDK's bearer auth when a token is given.

    Raises when the bind needs a token and none was given.
    """
    if token is None:
        if not is_loopback_name(host):
            raise ModelDeltaError(
                f"--host {host}: a bind other than {', '.join(LOOPBACK_HOSTS)} may be reachable by others; "
                f"give --auth-token-file FILE or set {TOKEN_ENV}"
            )
        return {}
    return {"token_verifier": StaticTokenVerifier(token),
            "auth": AuthSettings(issuer_url=ISSUER_PLACEHOLDER, resource_server_url=None)}  # type: ignore[arg-type]
