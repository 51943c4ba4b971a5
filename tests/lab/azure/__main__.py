"""Run the Azure emulator: ``python -m tests.lab.azure --config lab-azure.json``.

The config file is a JSON object: host, port, cert, key (TLS, signed by the lab CA), ready_file (written once
the server listens), and the LabConfig fields (see state.py). The lab launcher (tests/lab/lab.py) writes it. With
``token_proxy`` set, the AKS token proxy of identity bindings listens too, on its own port (token_proxy.py).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from . import token_proxy
from .app import build_server


def _interrupt(signum, frame):
    raise KeyboardInterrupt()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.azure", description=__doc__)
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    settings = json.loads(args.config.read_text())
    server = build_server(settings)
    proxy = token_proxy.start(server.state, server.log, settings.get("host", "127.0.0.1"))
    signal.signal(signal.SIGTERM, _interrupt)
    if settings.get("ready_file"):
        Path(settings["ready_file"]).write_text(json.dumps({"port": server.server_address[1]}))
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if proxy is not None:
            proxy.shutdown()
            proxy.server_close()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
