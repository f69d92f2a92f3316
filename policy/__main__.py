"""Entry point the Pulumi CLI runs for `--policy-pack policy`: serve the pack to the engine.

This is the only place a ``PolicyPack`` is constructed: the constructor starts the gRPC server the
engine talks to and blocks. The policies themselves live in ``gitops_policies`` (tests import them
from there, and ``tools/policy_runner.py`` runs them the way the engine does).
"""

from gitops_policies import ALL_POLICIES, PACK_DESCRIPTION, PACK_ENFORCEMENT_LEVEL, PACK_NAME
from pulumi_policy import PolicyPack

PolicyPack(
    name=PACK_NAME,
    policies=ALL_POLICIES,
    enforcement_level=PACK_ENFORCEMENT_LEVEL,
    description=PACK_DESCRIPTION,
)
