import sys

from cosmic_dagster.cli.main import main

sys.exit(main())
