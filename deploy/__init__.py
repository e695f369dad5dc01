"""Deployment of coopt-flower on real Flower SuperLink/SuperNodes (TLS + SuperNode auth).

See :mod:`deploy.cluster` and the README section "Deployment on separate machines".
"""
