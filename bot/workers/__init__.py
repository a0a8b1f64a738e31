"""Past one process: relay workers holding account leases, and how they hand work to the Matrix process.

`lease_keeper` claims, renews and releases a relay worker's accounts; `outbox_feed` loads what the workers
wrote into the Matrix process's delivery queues; `notices` lets a worker tell a user something (through
the outbox, since only the Matrix process talks to Matrix).
"""
