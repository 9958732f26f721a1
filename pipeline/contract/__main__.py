"""`python -m pipeline.contract`: the command line of pipeline/contract/load.py."""
import sys

from pipeline.contract.load import main

sys.exit(main())
