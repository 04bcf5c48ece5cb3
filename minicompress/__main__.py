"""`python -m minicompress ...` is the same as the `minicompress` command."""
import sys

from minicompress.cli import main

sys.exit(main())
