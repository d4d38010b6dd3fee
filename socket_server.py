"""`python socket_server.py ...` is `stream-processor serve ...`."""

import sys

from stream_processor.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
