"""The CoOpt data platform as a Flower ServerApp."""
