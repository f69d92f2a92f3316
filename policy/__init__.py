"""The CrossGuard policy pack (a package only so that tests can import ``policy.gitops_policies``)."""
