"""Loading the config for a run: the schema's checks (`bridge.config`, the ground floor, which
imports nothing above it) and then the checks the packages above it own for their sections."""

from __future__ import annotations

from collections.abc import Mapping

from .compliance.residency import config_problems as residency_problems
from .config import Config, ConfigCheck
from .core.workers import config_problems as workers_problems
from .identity.providers import config_problems as identity_problems
from .security.config_checks import config_problems as security_problems

CHECKS: tuple[ConfigCheck, ...] = (security_problems, identity_problems, residency_problems)


def load_config(path: str, *, for_run: bool = True,
                environ: Mapping[str, str] | None = None) -> Config:
    config = Config(path, environ)
    config.load()
    config.validate(for_run=for_run, checks=(*CHECKS, workers_problems))
    return config
