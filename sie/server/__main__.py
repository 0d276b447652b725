"""``python -m sie.server``: the same as ``sie serve``."""

import argparse
import logging
import sys

from sie.server.launch import add_serve_arguments, run_serve

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m sie.server", description="Serve the sie score API.")
    add_serve_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(run_serve(parser.parse_args()))
