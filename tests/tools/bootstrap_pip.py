"""Install pip into the running Python (a virtualenv made with --without-pip) from the package index.

Debian and Ubuntu ship ensurepip in a separate package (python3-venv) that a bare machine lacks, and installing
it needs root. pip's own wheel can run itself ("python pip.whl/pip install ..."), so this fetches the newest pip
wheel from the index pip would use (PIP_INDEX_URL, else PyPI) through its JSON simple API (PEP 691), checks the
index's sha256 and installs it. Standard library only: nothing else is installed yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request

INDEX = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/") + "/"
WHEEL = re.compile(r"^pip-(\d+(?:\.\d+)*)-py3-none-any\.whl$")


def _context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)


def newest_wheel() -> dict:
    request = urllib.request.Request(urllib.parse.urljoin(INDEX, "pip/"))
    request.add_header("Accept", "application/vnd.pypi.simple.v1+json")
    with urllib.request.urlopen(request, context=_context(), timeout=60) as response:
        files = json.load(response)["files"]
    wheels = [f for f in files if WHEEL.match(f["filename"]) and not f.get("yanked")]
    if not wheels:
        sys.exit(f"no pip wheel found at {INDEX}pip/")
    return max(wheels, key=lambda f: tuple(int(p) for p in WHEEL.match(f["filename"]).group(1).split(".")))


def main() -> None:
    wheel = newest_wheel()
    url = urllib.parse.urljoin(urllib.parse.urljoin(INDEX, "pip/"), wheel["url"])
    with urllib.request.urlopen(url, context=_context(), timeout=120) as response:
        data = response.read()
    expected = wheel.get("hashes", {}).get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        sys.exit(f"{wheel['filename']}: sha256 differs from the index's")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, wheel["filename"])
        with open(path, "wb") as handle:
            handle.write(data)
        command = [sys.executable, os.path.join(path, "pip"), "install", "--quiet", "--no-index", path]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
