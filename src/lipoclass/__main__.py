import sys

from lipoclass.cli import main

sys.exit(main())
