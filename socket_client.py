"""`python socket_client.py ...` is `stream-processor consume ...`."""

import sys

from stream_processor.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["consume", *sys.argv[1:]]))
