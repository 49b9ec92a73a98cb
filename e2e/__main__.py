"""Command line: ``python -m e2e [--version] demo | vectors verify [DIR] | bench [--peers] |
relay serve | business gateway | wire schema``.

``wire schema`` prints the CDDL schema of the relay's wire API (``SPEC-wire.cddl``).

``vectors verify`` without DIR checks the vectors of a source checkout (``vectors/`` beside the
package) when there is one, else the copy packaged in the wheel (``e2e/_vectors``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _has_vectors(directory: Path) -> bool:
    return directory.is_dir() and any(directory.glob("*.json"))


def default_vectors_dir() -> Path:
    """The checkout's ``vectors/`` if present, else the vectors packaged with the wheel."""
    here = Path(__file__).resolve().parent
    checkout = here.parent / "vectors"
    return checkout if _has_vectors(checkout) else here / "_vectors"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m e2e")
    from e2e import __version__

    parser.add_argument("--version", action="version", version=f"e2e {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="customers and a business talk through a relay", add_help=False)
    vec = sub.add_parser("vectors", help="known-answer vectors")
    vec_sub = vec.add_subparsers(dest="action", required=True)
    verify = vec_sub.add_parser("verify", help="verify every vector file in DIR")
    verify.add_argument("dir", nargs="?", type=Path, default=None)
    sub.add_parser("bench", help="benchmarks against the primitive floor", add_help=False)
    sub.add_parser("relay", help="serve the relay (relay serve --db ...)", add_help=False)
    sub.add_parser("business", help="the business API gateway (business gateway ...)",
                   add_help=False)  # fmt: skip
    wire = sub.add_parser("wire", help="the relay's wire API")
    wire_sub = wire.add_subparsers(dest="action", required=True)
    wire_sub.add_parser("schema", help="print its CDDL schema (RFC 8610)")
    ns, rest = parser.parse_known_args(args)

    if ns.command == "demo":
        from e2e import demo

        return demo.main(rest)
    if ns.command == "relay":
        from e2e.relay import serve

        return serve.main(rest)
    if ns.command == "business":
        from e2e.business import serve as business

        return business.main(rest)
    if ns.command == "bench":
        from e2e import bench

        return bench.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if ns.command == "wire":
        from e2e.platform.wire.schema import render

        sys.stdout.write(render())
        return 0
    from e2e.vectors import verify_dir

    directory = ns.dir or default_vectors_dir()
    if not directory.is_dir():
        print(f"no such directory: {directory}", file=sys.stderr)
        return 2
    if not _has_vectors(directory):
        print(
            f"no vector file (*.json) in {directory}: pass the directory holding the vectors, "
            "e.g. `python -m e2e vectors verify vectors/` in a checkout",
            file=sys.stderr,
        )
        return 2
    passed, failed = verify_dir(directory)
    if passed + failed == 0:
        print(
            f"no vector cases in {directory}: its *.json files are not e2e vector files "
            '(a JSON object with "concept" and "cases")',
            file=sys.stderr,
        )
        return 2
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
