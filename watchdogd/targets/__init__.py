"""Target kinds: connections to the things probes measure (PostgreSQL, Redis, Docker).

Each module exports ``TARGET: TargetSpec``; its ``connect`` imports the client
library lazily so unconfigured kinds cost no memory.
"""
