"""`python -m gptcore` is the `gptcore` command."""
import sys

from gptcore.cli import main

sys.exit(main())
