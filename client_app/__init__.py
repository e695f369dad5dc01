"""The CoOpt participant as a Flower ClientApp."""
