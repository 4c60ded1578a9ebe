"""``python -m controller``: see ``controller.cli`` for the commands."""

from controller.cli import main

raise SystemExit(main())
