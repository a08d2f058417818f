"""vmagent.pool_ce."""
