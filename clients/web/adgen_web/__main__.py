"""`python -m adgen_web`: the same as the `adgen-web` console script."""

from adgen_web.cli import main

main()
