"""``python -m torchshield``: the same CLI as the ``torchshield`` command."""

from torchshield.cli.app import main

main()
