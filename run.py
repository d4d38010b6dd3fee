"""File mode: `python run.py [--input sampled_rc.json] [--output results.json] ...`."""

import sys

from stream_processor.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["process", *sys.argv[1:]]))
