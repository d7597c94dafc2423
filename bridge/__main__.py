"""Command line: run the bridge, generate its registration, or start the sandbox."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from . import __version__
from .config import Config, ConfigError
from .configure import load_config

DESCRIPTION = """\
RelayForge, a Matrix bridge for Slack, Discord, Telegram and XMPP.

  python -m bridge -c config.yaml                       run the bridge
  python -m bridge -c config.yaml -g -r registration.yaml
        generate the appservice registration: fresh as_token/hs_token are written into the
        config, and the registration file is written for the homeserver to load (Synapse:
        app_service_config_files)
  python -m bridge -c config.yaml vault status          master key versions and counts
  python -m bridge -c config.yaml vault rotate          new master key; rewrap every data key
  python -m bridge -c config.yaml audit verify          check the audit chain and checkpoint
  python -m bridge -c config.yaml export --hold NAME --out DIR
        write a legal hold's export bundle (signed manifest, RSMF 2.0 manifest)
  python -m bridge -c config.yaml export public-key     the key export bundles are signed with
  python -m bridge export verify DIR [--public-key FILE]
        check a bundle's signature and every file's hash (no vault with --public-key)
  python -m bridge sandbox                              run a throwaway homeserver + bridge
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bridge", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-c", "--config", default="config.yaml",
                        help="the config file (default: config.yaml)")
    parser.add_argument("-g", "--generate-registration", action="store_true",
                        help="write the registration file and new tokens, then exit")
    parser.add_argument("-r", "--registration", default="registration.yaml",
                        help="where -g writes the registration (default: registration.yaml)")
    parser.add_argument("--version", action="version", version=f"RelayForge {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{vault,audit,export,sandbox}")
    vault = commands.add_parser("vault", help="the credential vault")
    vault.add_argument("action", choices=["status", "rotate"])
    audit = commands.add_parser("audit", help="the audit log")
    audit.add_argument("action", choices=["verify"])
    commands.add_parser("sandbox", help="a throwaway homeserver and bridge (see sandbox --help)",
                        add_help=False)
    export = commands.add_parser("export", help="legal hold export bundles")
    export.add_argument("action", nargs="?", choices=["public-key", "verify"],
                        help="omit to write a bundle (--hold, --out)")
    export.add_argument("directory", nargs="?", help="the bundle to verify")
    export.add_argument("--hold", help="the hold to export")
    export.add_argument("--out", help="a new (or empty) directory for the bundle")
    export.add_argument("--public-key", dest="public_key",
                        help="verify with this PEM public key instead of the vault's")
    for sub in (vault, audit, export):
        sub.add_argument("-c", "--config", default=argparse.SUPPRESS,
                         help="the config file (default: config.yaml)")
    return parser


def _fail(error: ConfigError) -> int:
    print(f"Cannot start: {error}", file=sys.stderr)
    return 2


def generate(config_path: str, registration_path: str) -> int:
    from .registration import HOMESERVER_SETTINGS, generate_registration

    try:
        config = load_config(config_path, for_run=False)
    except ConfigError as e:
        return _fail(e)
    registration = generate_registration(config, registration_path)
    print(f"Wrote {registration_path} for appservice {registration['id']!r} and saved new "
          f"tokens in {config_path}.\nAdd {registration_path} to the homeserver's "
          "app_service_config_files and restart it.")
    print(HOMESERVER_SETTINGS)
    _offer_double_puppet_registration(config, registration_path)
    return 0


def _offer_double_puppet_registration(config: Config, registration_path: str) -> None:
    """Double puppeting's second registration: written when the Matrix network is enabled,
    or when the admin says yes at a terminal."""
    from .registration import double_puppet_path, generate_double_puppet_registration

    path = double_puppet_path(registration_path)
    if not config.get("networks.matrix.enabled"):
        if not sys.stdin.isatty():
            return
        answer = input(f"Also write {path}, the second registration double puppeting needs "
                       "(people's own Matrix users speak for them, no password)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return
    generate_double_puppet_registration(config, path)
    print(f"Wrote {path} for double puppeting and put its secret into double_puppet.secrets "
          f"of {config.path}.\nAdd {path} to app_service_config_files too.")


def run(config_path: str) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as e:
        return _fail(e)
    try:
        logging.config.dictConfig(dict(config["logging"]))
    except (ValueError, TypeError, AttributeError, ImportError) as e:
        # dictConfig's message names the bad part of the section.
        return _fail(ConfigError([f"logging: {e}"], config_path))
    from .preflight import preflight

    problems = asyncio.run(preflight(config))
    if problems:
        # Nothing is written before these pass: no key file, no database.
        print(f"Cannot start: {'; '.join(problems)}", file=sys.stderr)
        return 2
    from .app import Bridge, run_until_signalled

    return _run_reporting(lambda: run_until_signalled(Bridge(config)), "start")


def _run_reporting(make: Callable[[], Coroutine[Any, Any, int | None]], doing: str) -> int:
    """Run a coroutine; errors an admin can fix become one clear line and exit code 2."""
    from .security.vault import VaultError

    try:
        return asyncio.run(make()) or 0
    except ConfigError as e:
        return _fail(e)
    except VaultError as e:
        print(f"Cannot {doing}: vault: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # A port taken after the pre-flight check, a file the bridge may not write.
        print(f"Cannot {doing}: {e}", file=sys.stderr)
        return 2


def admin(command: tuple[str, str], config_path: str) -> int:
    from .admin_cli import COMMANDS

    try:
        config = load_config(config_path)
    except ConfigError as e:
        return _fail(e)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return _run_reporting(lambda: COMMANDS[command](config), " ".join(command))


def export(args: argparse.Namespace) -> int:
    from .compliance import export_cli

    if args.action == "verify":
        if not args.directory:
            print("Usage: export verify DIR [--public-key FILE]", file=sys.stderr)
            return 2
        if args.public_key:  # the reviewer's way: no config, no vault
            return export_cli.verify_with_file(args.directory, args.public_key)
        directory = args.directory
        return admin_run(args.config, lambda c: export_cli.verify_with_vault(c, directory))
    if args.action == "public-key":
        return admin_run(args.config, export_cli.print_public_key)
    if not args.hold or not args.out:
        print("Usage: export --hold NAME --out DIR | export public-key | export verify DIR",
              file=sys.stderr)
        return 2
    hold, out = args.hold, args.out
    return admin_run(args.config, lambda c: export_cli.write_export(c, hold, out))


def admin_run(config_path: str, command: Callable[[Config], Coroutine[Any, Any, int]]) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as e:
        return _fail(e)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return _run_reporting(lambda: command(config), "export")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "sandbox" in argv[:1]:
        from .sandbox.cli import main as sandbox_main

        return sandbox_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command in ("vault", "audit"):
        return admin((args.command, args.action), args.config)
    if args.command == "export":
        return export(args)
    if args.generate_registration:
        return generate(args.config, args.registration)
    return run(args.config)


if __name__ == "__main__":
    sys.exit(main())
