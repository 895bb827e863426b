import sys

from skillcell.cli import main

sys.exit(main())
