"""`python run_streaming.py ...` is `stream-processor run ...`."""

import sys

from stream_processor.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
