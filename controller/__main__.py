"""``python -m controller``: see ``controller.surfaces.cli`` for the commands."""

from controller.surfaces.cli import main

raise SystemExit(main())
