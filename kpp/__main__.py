import sys

from kpp.cli import main

sys.exit(main())
