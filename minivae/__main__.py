"""``python -m minivae`` runs the ``minivae`` command."""
import sys

from .cli import main

sys.exit(main())
