"""The policies of the ``gitops-guardrails`` pack, importable without starting a policy server.

``policy/__main__.py`` hands ``ALL_POLICIES`` to ``PolicyPack`` (which serves them to the Pulumi
engine and blocks); the tests and ``tools/policy_runner.py`` import them from here.
"""

from pulumi_policy import EnforcementLevel, Policy

from . import aws, backups, gitlab, kubernetes, runners, stack

PACK_NAME = "gitops-guardrails"
PACK_DESCRIPTION = (
    "Security rules every stack of the GitLab + kubeadm + Flux product must pass: no world-open admin "
    "port, IMDSv2 and encrypted disks, no secret in user data, least-privilege IAM and RBAC, hardened "
    "pods, private-by-policy GitLab, no CI job next to GitLab, credentials kept secret."
)
# Every policy is mandatory unless a stack's policy config says otherwise.
PACK_ENFORCEMENT_LEVEL = EnforcementLevel.MANDATORY

ALL_POLICIES: list[Policy] = [
    *aws.POLICIES,
    *aws.STACK_POLICIES,
    *kubernetes.POLICIES,
    *gitlab.POLICIES,
    *gitlab.STACK_POLICIES,
    *runners.STACK_POLICIES,
    *stack.STACK_POLICIES,
    *backups.STACK_POLICIES,
]
POLICIES_BY_NAME: dict[str, Policy] = {policy.name: policy for policy in ALL_POLICIES}

__all__ = ["ALL_POLICIES", "PACK_DESCRIPTION", "PACK_ENFORCEMENT_LEVEL", "PACK_NAME", "POLICIES_BY_NAME"]
