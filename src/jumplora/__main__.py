"""`python -m jumplora ...`, the same as the `jumplora` command; what `accelerate launch -m jumplora run ...` runs."""

from jumplora.cli import main

raise SystemExit(main())
