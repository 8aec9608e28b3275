import sys

from medlens.cli import main

sys.exit(main())
