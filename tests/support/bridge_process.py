"""Run the bridge in its own process with the wire test network, so a test can kill -9 it:
python -m tests.support.bridge_process CONFIG WIRE_URL"""

from __future__ import annotations

import asyncio
import logging
import sys

from bridge.app import Bridge, run_until_signalled
from bridge.config import load_config

from .wirenet import WireConnector


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s "
                        "%(message)s")
    config = load_config(sys.argv[1])
    asyncio.run(run_until_signalled(Bridge(config, [WireConnector(sys.argv[2])])))


if __name__ == "__main__":
    main()
