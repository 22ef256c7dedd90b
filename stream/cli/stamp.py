"""The ``labquake stamp`` verb: record a model bundle's hashes after a deliberate edit.

A bundle whose ``bundle.json`` or ``model.keras`` changed is refused until its hashes are
recorded again: edit (for example the alert policy), check the edit, then stamp.

Example:
    labquake stamp model/bundled/default.lqb
"""

from __future__ import annotations

import argparse

VERB = "stamp"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``stamp`` verb and its argument.

    Args:
        subparsers: the ``labquake`` command's sub-parsers.

    Returns:
        The verb's parser.
    """
    parser = subparsers.add_parser(
        VERB, help="record a model bundle's hashes after a deliberate edit",
        description="Compute the SHA-256 of the bundle's model.keras and of its bundle.json "
                    "(canonical form) and record them in bundle.json, so that the edited "
                    "bundle loads. Anyone who can write the bundle can do this: keep bundle "
                    "folders writable only by whoever deploys models (docs/security.md).")
    parser.add_argument("bundle", metavar="BUNDLE", help="the bundle directory (NAME.lqb)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Stamp ``args.bundle``; print its version and new hash on one line."""
    from model.bundle.inference import BUNDLE_HASH_KEY, stamp

    metadata = stamp(args.bundle)
    print(f"{args.bundle}: version {metadata['version']}, "
          f"{BUNDLE_HASH_KEY} {metadata[BUNDLE_HASH_KEY]}")
    return 0
