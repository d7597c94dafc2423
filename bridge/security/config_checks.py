"""The security sections' config checks (`bridge.config.ConfigCheck`), run when the config is
loaded for a run (`bridge.configure`): `policy`, and the anomaly detector's GeoIP database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import get_path
from ..schema import NetworkInfo
from .anomaly import geoip_problem
from .policy import check_policy


def config_problems(effective: Mapping[str, Any], networks: Mapping[str, NetworkInfo]
                    ) -> list[str]:
    problems = check_policy(get_path(effective, "policy", None), networks)
    geoip = geoip_problem(get_path(effective, "security.anomaly.geoip_database", None))
    return problems + ([geoip] if geoip else [])
