"""`python -m devtools.teststripe --port 12111`: the test Stripe on loopback, for the demo."""

from devtools.teststripe.server import main

main()
