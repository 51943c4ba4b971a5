"""A stand-in for the lab kube-apiserver's anonymous /openid/v1/jwks, for the emulator's issuer tests: an HTTPS
server with a lab-CA certificate publishing the public half of a key the test signs tokens with."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.lab import pki


class FakeApiserver:
    """Serves /openid/v1/jwks over HTTPS with a lab-CA certificate, as the lab kube-apiserver does anonymously."""

    def __init__(self, workdir: Path, ca: pki.KeyPair) -> None:
        self.key = key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        self.jwks = {
            "keys": [{"use": "sig", "kty": "RSA", "kid": "lab-key", "alg": "RS256", "n": jwk["n"], "e": jwk["e"]}]
        }
        payload = json.dumps(self.jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                status = 200 if self.path == "/openid/v1/jwks" else 404
                self.send_response(status)
                self.send_header("Content-Type", "application/jwk-set+json")
                self.send_header("Content-Length", str(len(payload) if status == 200 else 0))
                self.end_headers()
                if status == 200:
                    self.wfile.write(payload)

            def log_message(self, *args):
                pass

        pair = pki.issue(
            ca, workdir, "apiserver", "kube-apiserver", dns_names=("localhost",), ip_addresses=("127.0.0.1",)
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pair.cert, pair.key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sign(self, claims: dict) -> str:
        """A ServiceAccount token as the apiserver would sign it, with the key it publishes."""
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "lab-key"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
