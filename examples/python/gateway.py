#!/usr/bin/env python3
"""A tiny gateway: runs the terminals service on 127.0.0.1 and says how to use it.

    PYTHONPATH=build/bindings/python python3 examples/python/gateway.py [--port 8080]
        [--data-dir DIR] [--isolation none|user|sandbox]

Standard library and the terminals module only. Ctrl-C stops it; the users' terminals keep
running and the next start adopts them.
"""

import argparse
import os
import sys
import tempfile

import terminals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "terminals-gateway"))
    parser.add_argument("--isolation", default="", help="none | user | sandbox (default: strongest possible)")
    args = parser.parse_args()

    try:
        server = terminals.Server(host="127.0.0.1", port=args.port, data_dir=args.data_dir,
                                  isolation=args.isolation or None)
        server.start()
    except terminals.TerminalsError as e:
        print(f"gateway: cannot start: {e} ({e.code})", file=sys.stderr)
        return 1

    print(f"terminals gateway listening on {server.address} (backend {server.backend_description})")
    print("Authenticate with: Authorization: Bearer <service key>, plus X-User-Id: <user id>")
    if server.service_key_generated:
        print(f"Service key (generated now, stored in {server.service_key_path}):\n  {server.service_key}")
    else:
        print(f"Service key: stored in {server.service_key_path}")
    print(f'Try: curl -H "Authorization: Bearer $(cat {server.service_key_path})" '
          f'-H "X-User-Id: alice" {server.address}/files/cwd')
    print("Ctrl-C to stop.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\ngateway stopped; terminals keep running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
