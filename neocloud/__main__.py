"""`python -m neocloud` is the `neocloud` command."""

from neocloud.cli import main

main()
