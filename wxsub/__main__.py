import sys

from wxsub.cli import main

sys.exit(main())
