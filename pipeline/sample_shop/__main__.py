"""`python -m pipeline.sample_shop`: the command line of pipeline/sample_shop/generate.py."""
import sys

from pipeline.sample_shop.generate import main

sys.exit(main())
