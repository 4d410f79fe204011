import sys

from nst_jax.cli import main

sys.exit(main())
