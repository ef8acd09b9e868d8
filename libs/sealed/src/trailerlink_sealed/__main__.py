"""Operator tools for sealed objects and data-centre keys.

    python -m trailerlink_sealed keygen PRIVATE.pem PUBLIC.pem   # new data-centre key pair
    python -m trailerlink_sealed key-id KEY.pem                  # the dc-… id of a key
    python -m trailerlink_sealed header OBJECT.tlsealed          # header as JSON, no key
    python -m trailerlink_sealed open OBJECT.tlsealed OUT.dcm --keys DIR   # verified unseal

The public file goes to every trailer (TRAILERLINK_SEALING_PUBLIC_KEYS, with the printed
id as TRAILERLINK_SEALING_CURRENT_KEY_ID); the private file only to the ingest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from trailerlink_crypto.keys import OpeningKey, OpeningKeyring, RecipientKey

from trailerlink_sealed.sealed import read_sealed_header, unseal_to_file


def _key_id(path: Path) -> str:
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        return OpeningKey.from_pem(data).key_id
    return RecipientKey.from_pem(data).key_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trailerlink_sealed")
    sub = parser.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="make a data-centre key pair, print its id")
    keygen.add_argument("private", type=Path)
    keygen.add_argument("public", type=Path)
    key_id = sub.add_parser("key-id", help="print the id of a PEM key (public or private)")
    key_id.add_argument("key", type=Path)
    header = sub.add_parser("header", help="print a sealed object's header as JSON")
    header.add_argument("sealed", type=Path)
    opener = sub.add_parser("open", help="unseal and verify into a file")
    opener.add_argument("sealed", type=Path)
    opener.add_argument("out", type=Path)
    opener.add_argument("--keys", type=Path, required=True, help="directory of PEM private keys")
    args = parser.parse_args(argv)

    if args.command == "keygen":
        key = OpeningKey.generate()
        fd = os.open(args.private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.to_pem())
        args.public.write_bytes(key.recipient.to_pem())
        print(key.key_id)
    elif args.command == "key-id":
        print(_key_id(args.key))
    elif args.command == "header":
        h = read_sealed_header(args.sealed)
        print(
            json.dumps(
                {
                    "codec": h.codec,
                    "codec_params": h.codec_params,
                    "original_size": h.original_size,
                    "original_sha256": h.original_sha256,
                    "dataset_offset": h.dataset_offset,
                    "dataset_sha256": h.dataset_sha256,
                    "key_id": h.key_id,
                    "key_wrap": h.key_wrap,
                    "chunk_size": h.chunk_size,
                    "sop_instance_uid": h.sop_instance_uid,
                    "created_at_ms": h.created_at_ms,
                    "producer": h.producer,
                    "header_bytes": len(h.raw),
                },
                indent=2,
            )
        )
    else:
        result = unseal_to_file(args.sealed, args.out, OpeningKeyring.load_dir(args.keys))
        print(json.dumps({"path": str(result.path), "size": result.size, "sha256": result.sha256}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
