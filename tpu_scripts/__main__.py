import sys

from tpu_scripts.cli import main

sys.exit(main())
