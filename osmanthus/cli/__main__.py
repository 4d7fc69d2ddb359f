"""`python -m osmanthus.cli`: the `osmanthus` command without its console script."""

from osmanthus.cli.app import main

raise SystemExit(main())
