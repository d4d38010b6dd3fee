import sys

from stream_processor.cli.main import main

sys.exit(main())
