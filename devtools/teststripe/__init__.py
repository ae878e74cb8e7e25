"""TEST SUPPORT ONLY: a small, stateful, in-memory Stripe on loopback for the endpoints modelfolio
uses, driven by the real `stripe` SDK over HTTP. The tests, the benchmarks and the local paid demo
(`python -m devtools.teststripe`) run against it; production talks to Stripe itself.

    server.py    customers, products, prices, meters, meter events, summaries; faults; the app
    checkout.py  webhook endpoints, signed deliveries, Checkout sessions and their test pay page
    subscriptions.py  subscriptions and their items, status changes and their events
    stream.py    the v2 meter event session and stream
    connect.py   Express accounts, Account Links and their onboarding page, transfers, reversals
    invoices.py  subscriptions' metered invoices paid by a charge, invoice payments, refunds
"""
