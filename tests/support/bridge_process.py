"""Run the bridge in its own process, so a test can kill -9 it:
python -m tests.support.bridge_process CONFIG [WIRE_URL [send-only]]
With WIRE_URL, with the wire test network (send-only: without receiving from it); without,
with the networks the config enables."""

from __future__ import annotations

import asyncio
import logging
import sys

from bridge.app import Bridge, run_until_signalled
from bridge.configure import load_config

from .wirenet import WireConnector


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s "
                        "%(message)s")
    config = load_config(sys.argv[1])
    connectors = [WireConnector(sys.argv[2], receive=sys.argv[3:] != ["send-only"])
                  ] if len(sys.argv) > 2 else []
    asyncio.run(run_until_signalled(Bridge(config, connectors)))


if __name__ == "__main__":
    main()
