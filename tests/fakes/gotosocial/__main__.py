"""``python -m tests.fakes.gotosocial`` runs the fake server by hand (see ``server.main``)."""

from tests.fakes.gotosocial.server import main

main()
