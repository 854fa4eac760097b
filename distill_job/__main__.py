import sys

from distill_job.cli import main

sys.exit(main())
