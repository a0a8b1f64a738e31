"""``python -m tests.fakes`` runs the fake GoToSocial (options as for ``tests.fakes.gotosocial``)."""

from tests.fakes.gotosocial import main

main()
