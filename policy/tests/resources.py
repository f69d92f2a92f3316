"""Realistic resources as the engine shows them to policies, compliant unless a test changes them.

Each builder returns what this product registers (camelCase inputs, the options the SDK sets), so a
failing case reads as "the compliant resource, with one thing wrong".
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tools.policy_runner import Resource, root_stack, secret, urn_for

CLUSTER_GROUP = "sg-0c1a2b3c4d5e6f708"
GITLAB_GROUP = "sg-0a9b8c7d6e5f40312"
ADMIN_CIDR = "203.0.113.7/32"


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``patch`` applied recursively; a value of None removes the key."""
    result = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def tags(name: str) -> dict[str, str]:
    return {"Project": "gitops", "Stack": "dev", "ManagedBy": "pulumi", "Name": name}


# --------------------------------------------------------------------------------------------
# AWS
# --------------------------------------------------------------------------------------------
PUBLIC_USER_DATA = """#cloud-config
hostname: gitlab
package_update: true
packages: [ca-certificates, curl, docker.io]
users:
  - default
  - name: ops
    lock_passwd: true
write_files:
  - path: /etc/gitops/gitlab.env
    permissions: '0644'
    content: |
      GITLAB_HOSTNAME=ec2-198-51-100-20.compute-1.amazonaws.com
      GITLAB_IMAGE=gitlab/gitlab-ce:18.5.2-ce.0
      REGISTRY_PORT=5050
  - path: /usr/local/share/ca-certificates/gitops-ca.crt
    content: |
      -----BEGIN CERTIFICATE-----
      MIIBszCCAVmgAwIBAgIUYk0bX2V4YW1wbGUtY2EtY2VydDAKBggqhkjOPQQDAjAX
      -----END CERTIFICATE-----
runcmd:
  - [bash, -c, 'token_file=/run/gitops/token; [ -s "$token_file" ] || echo "token arrives over SSH"']
"""


def instance(name: str = "gitops-gitlab", **patch: Any) -> Resource:
    """An instance as components/hosts.py hardened_instance registers it."""
    inputs = {
        "ami": "ami-0123456789abcdef0",
        "instanceType": "t3.large",
        "subnetId": "subnet-68e8313d944a17ecd",
        "vpcSecurityGroupIds": [GITLAB_GROUP],
        "associatePublicIpAddress": False,
        "keyName": "gitops-ssh-keypair",
        "iamInstanceProfile": "gitops-gitlab-profile-1a2b3c4",
        "userData": PUBLIC_USER_DATA,
        "metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1},
        "rootBlockDevice": {
            "volumeType": "gp3",
            "volumeSize": 30,
            "encrypted": True,
            "deleteOnTermination": True,
            "tags": tags(f"{name}-root"),
        },
        "tags": tags(name),
    }
    return Resource("aws:ec2/instance:Instance", name, merge(inputs, patch))


def launch_template(name: str = "gitops-worker", **patch: Any) -> Resource:
    inputs = {
        "imageId": "ami-0123456789abcdef0",
        "instanceType": "t3.medium",
        "userData": base64.b64encode(PUBLIC_USER_DATA.encode()).decode(),
        "metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required"},
        "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"volumeSize": 30, "encrypted": "true"}}],
        "tagSpecifications": [
            {"resourceType": kind, "tags": tags(f"{name}-vm")} for kind in ("instance", "volume", "network-interface")
        ],
        "tags": tags(name),
    }
    return Resource("aws:ec2/launchTemplate:LaunchTemplate", name, merge(inputs, patch))


def autoscaling_group(name: str = "runners-job-vms", **patch: Any) -> Resource:
    """An Auto Scaling group as components/runners.py registers it: its tags are a list."""
    inputs = {
        "minSize": 0,
        "maxSize": 2,
        "protectFromScaleIn": True,
        "suspendedProcesses": ["AZRebalance"],
        "launchTemplate": {"id": "lt-0123456789abcdef0", "version": "1"},
        "tags": [{"key": key, "value": value, "propagateAtLaunch": False} for key, value in tags(name).items()],
    }
    return Resource("aws:autoscaling/group:Group", name, merge(inputs, patch))


def volume(name: str = "gitops-gitlab-data", *, protect: bool = True, **patch: Any) -> Resource:
    inputs = {"availabilityZone": "us-east-1a", "size": 50, "type": "gp3", "encrypted": True, "tags": tags(name)}
    return Resource("aws:ebs/volume:Volume", name, merge(inputs, patch), protect=protect)


def ingress_rule(
    name: str,
    port: int | tuple[int, int] | None,
    *,
    cidr: str | None = ADMIN_CIDR,
    group: str | None = None,
    protocol: str = "tcp",
    description: str | None = "from the operators' adminCidrs",
) -> Resource:
    """An aws.vpc.SecurityGroupIngressRule (the way the components add rules)."""
    low, high = port if isinstance(port, tuple) else (port, port)
    inputs: dict[str, Any] = {"securityGroupId": CLUSTER_GROUP, "ipProtocol": protocol, "tags": tags(name)}
    if port is not None:
        inputs.update(fromPort=low, toPort=high)
    if cidr is not None:
        inputs["cidrIpv6" if ":" in cidr else "cidrIpv4"] = cidr
    if group is not None:
        inputs["referencedSecurityGroupId"] = group
    if description is not None:
        inputs["description"] = description
    return Resource("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", name, inputs)


def security_group(
    name: str = "gitops-legacy", *, ingress: list[dict[str, Any]] | None = None, **patch: Any
) -> Resource:
    inputs = {
        "vpcId": "vpc-df1325bf6c71d0731",
        "description": "GitLab host: web, registry, git over SSH",
        "ingress": ingress or [],
        "egress": [
            {"protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["0.0.0.0/0"], "description": "outbound"}
        ],
        "tags": tags(name),
    }
    return Resource("aws:ec2/securityGroup:SecurityGroup", name, merge(inputs, patch))


def inline_ingress(port: int, cidrs: list[str], description: str = "HTTPS from adminCidrs") -> dict[str, Any]:
    return {"protocol": "tcp", "fromPort": port, "toPort": port, "cidrBlocks": cidrs, "description": description}


def security_group_rule(name: str, port: int, cidrs: list[str], rule_type: str = "ingress") -> Resource:
    inputs = {
        "type": rule_type,
        "securityGroupId": GITLAB_GROUP,
        "protocol": "tcp",
        "fromPort": port,
        "toPort": port,
        "cidrBlocks": cidrs,
        "description": "legacy-style rule",
    }
    return Resource("aws:ec2/securityGroupRule:SecurityGroupRule", name, inputs)


def iam_document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def role_policy(name: str, *statements: dict[str, Any]) -> Resource:
    return Resource(
        "aws:iam/rolePolicy:RolePolicy",
        name,
        {"role": "gitops-gitlab-role-1a2b3c4", "policy": iam_document(*statements)},
    )


def role(name: str = "gitops-gitlab-role", **patch: Any) -> Resource:
    trust = iam_document({"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"})
    return Resource("aws:iam/role:Role", name, merge({"assumeRolePolicy": trust, "tags": tags(name)}, patch))


def policy_attachment(name: str, policy_arn: str) -> Resource:
    return Resource(
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
        name,
        {"role": "gitops-gitlab-role-1a2b3c4", "policyArn": policy_arn},
    )


def vpc(name: str = "gitops-vpc", **patch: Any) -> Resource:
    inputs = {"cidrBlock": "10.42.0.0/16", "enableDnsSupport": True, "enableDnsHostnames": True, "tags": tags(name)}
    return Resource("aws:ec2/vpc:Vpc", name, merge(inputs, patch))


def vpc_baseline(network: Resource, *, retention: int | None = 365, **default_group: Any) -> list[Resource]:
    """What components/network.py adds to its VPC: flow logs to a log group that expires them, and the
    default security group taken over with no rule (``default_group`` patches it, e.g. ingress=[...])."""
    group_inputs: dict[str, Any] = {"name": "/gitops/dev/vpc-flow-logs", "tags": tags("gitops-flow-logs")}
    if retention is not None:
        group_inputs["retentionInDays"] = retention
    log_group = Resource("aws:cloudwatch/logGroup:LogGroup", "gitops-flow-logs", group_inputs)
    flow_log = Resource(
        "aws:ec2/flowLog:FlowLog",
        "gitops-flow-log",
        {
            "vpcId": "vpc-df1325bf6c71d0731",
            "trafficType": "ALL",
            "logDestinationType": "cloud-watch-logs",
            "logDestination": "arn:aws:logs:us-east-1:123456789012:log-group:/gitops/dev/vpc-flow-logs",
            "iamRoleArn": "arn:aws:iam::123456789012:role/gitops-flow-logs-role-1a2b3c4",
            "tags": tags("gitops-flow-log"),
        },
        property_dependencies={"vpcId": [network.urn], "logDestination": [log_group.urn]},
    )
    default = Resource(
        "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
        "gitops-default-group",
        merge(
            {"vpcId": "vpc-df1325bf6c71d0731", "ingress": [], "egress": [], "tags": tags("gitops-default-group")},
            default_group,
        ),
        property_dependencies={"vpcId": [network.urn]},
    )
    return [log_group, flow_log, default]


def aws_provider(name: str = "tagged", default_tags: dict[str, str] | None = None) -> Resource:
    return Resource(
        "pulumi:providers:aws",
        name,
        {"region": "us-east-1", "defaultTags": {"tags": default_tags or {}}},
        urn=urn_for("pulumi:providers:aws", name),
    )


# --------------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------------
def container(name: str = "shark-app", **patch: Any) -> dict[str, Any]:
    """The shark-app container as components/app_manifests.py writes it."""
    base = {
        "name": name,
        "image": "gitlab.example.test:5050/operator/shark-application:3f9c2a1e",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "250m", "memory": "128Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return merge(base, patch)


def pod_spec(*containers: dict[str, Any], **patch: Any) -> dict[str, Any]:
    base = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
        "automountServiceAccountToken": False,
        "containers": list(containers) or [container()],
    }
    return merge(base, patch)


def deployment_body(name: str = "shark-app", namespace: str = "default", spec: dict[str, Any] | None = None) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec or pod_spec()},
        },
    }


def deployment(name: str = "shark-app", namespace: str = "default", spec: dict[str, Any] | None = None) -> Resource:
    return Resource("kubernetes:apps/v1:Deployment", name, deployment_body(name, namespace, spec))


def daemon_set(name: str, namespace: str, spec: dict[str, Any]) -> Resource:
    body = deployment_body(name, namespace, spec)
    body["kind"] = "DaemonSet"
    return Resource("kubernetes:apps/v1:DaemonSet", name, body)


def pod(name: str, spec: dict[str, Any], namespace: str = "default") -> Resource:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    return Resource("kubernetes:core/v1:Pod", name, body)


def binding(
    name: str, role_name: str, subjects: list[dict[str, str]], *, kind: str = "ClusterRoleBinding", namespace: str = ""
) -> Resource:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    body = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": subjects,
    }
    return Resource(f"kubernetes:rbac.authorization.k8s.io/v1:{kind}", name, body)


def service_account(name: str, namespace: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def service(name: str = "shark-app", service_type: str = "NodePort") -> Resource:
    port: dict[str, Any] = {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}
    if service_type == "NodePort":
        port["nodePort"] = 30000
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": service_type, "selector": {"app": name}, "ports": [port]},
    }
    return Resource("kubernetes:core/v1:Service", name, body)


def k8s_secret(
    name: str, string_data: dict[str, Any], *, depends_on: Sequence[Resource] = (), kind: str = "Opaque"
) -> Resource:
    """A Secret; ``depends_on`` are the resources its stringData was computed from."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "flux"},
        "type": kind,
        "stringData": secret(string_data),
    }
    return Resource(
        "kubernetes:core/v1:Secret",
        name,
        body,
        property_dependencies={"stringData": [r.urn for r in depends_on], "metadata": []},
        additional_secret_outputs=["data", "stringData"],  # what pulumi_kubernetes sets
    )


# --------------------------------------------------------------------------------------------
# Keys, random values, remote steps
# --------------------------------------------------------------------------------------------
def _ed25519_pem() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def tls_key(name: str = "flux-deploy-key", *, declared_secret: bool = True) -> Resource:
    """A tls.PrivateKey with its outputs; the SDK class declares the key outputs secret."""
    pem = _ed25519_pem()
    outputs = {
        "algorithm": "ED25519",
        "privateKeyPem": pem,
        "privateKeyPemPkcs8": pem,
        "publicKeyOpenssh": "ssh-ed25519 AAAA",
    }
    return Resource(
        "tls:index/privateKey:PrivateKey",
        name,
        {"algorithm": "ED25519"},
        outputs=outputs,
        additional_secret_outputs=["privateKeyOpenssh", "privateKeyPem", "privateKeyPemPkcs8"]
        if declared_secret
        else [],
    )


def private_key_pem(key: Resource) -> str:
    """The PEM a tls_key() resource holds."""
    assert key.outputs is not None
    return key.outputs["privateKeyPem"]


def random_string(name: str, *, declared_secret: bool) -> Resource:
    inputs = {"length": 16, "special": False, "upper": False}
    return Resource(
        "random:index/randomString:RandomString",
        name,
        inputs,
        outputs={**inputs, "result": "k3x9q2m7w1z8c4v6"},
        additional_secret_outputs=["result"] if declared_secret else [],
    )


def remote_step(
    name: str, *, stdout: str, stdout_secret: bool, stdin: bool = True, logging: str = "stderr"
) -> Resource:
    """A command.remote.Command as components/remote.py remote_step registers it, after it ran."""
    inputs: dict[str, Any] = {
        "connection": secret({"host": "198.51.100.20", "user": "admin", "privateKey": "<key>"}),
        "create": "sudo env STEP_NAME=seed-token.sh bash -c '...' seed-token.sh",
        "logging": logging,
        "triggers": ["4f2c0c1d"],
    }
    if stdin:
        inputs["stdin"] = secret("glpat-0123456789abcdefghij")
    return Resource(
        "command:remote:Command",
        name,
        inputs,
        outputs={**inputs, "stdout": stdout, "stderr": "2026-11-27T19:30:00Z [step] done"},
        additional_secret_outputs=["connection", *(["stdout"] if stdout_secret else [])],
    )


def kubeconfig(client_key_pem: str) -> str:
    key_data = base64.b64encode(client_key_pem.encode()).decode()
    return (
        "apiVersion: v1\nkind: Config\nclusters:\n- name: gitops\n  cluster:\n    server: https://198.51.100.30:6443\n"
        "users:\n- name: admin\n  user:\n    client-certificate-data: LS0t\n"
        f"    client-key-data: {key_data}\ncontexts: []\n"
    )


def exports(**values: Any) -> Resource:
    return root_stack("dev", "gitops", values)


# --------------------------------------------------------------------------------------------
# GitLab
# --------------------------------------------------------------------------------------------
def project(name: str = "shark-application", visibility: str | None = "private") -> Resource:
    inputs = {"name": name, "path": name, "containerRegistryAccessLevel": "enabled", "initializeWithReadme": False}
    if visibility is not None:
        inputs["visibilityLevel"] = visibility
    return Resource("gitlab:index/project:Project", name, inputs)


def deploy_key(name: str, title: str, *, can_push: bool) -> Resource:
    inputs = {"project": "101", "title": title, "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA flux", "canPush": can_push}
    return Resource("gitlab:index/deployKey:DeployKey", name, inputs)


def project_variable(key: str, *, masked: bool | None, value: Any = "c2VjcmV0LXZhbHVl") -> Resource:
    inputs: dict[str, Any] = {"project": "101", "key": key, "value": value, "protected": False}
    if masked is not None:
        inputs["masked"] = masked
    return Resource("gitlab:index/projectVariable:ProjectVariable", key.lower().replace("_", "-"), inputs)


def project_cluster() -> Resource:
    """The certificate-based cluster of clusterIntegration certificate (components/gitlab_integration.py)."""
    inputs = {
        "project": "101",
        "name": "k8s cluster",
        "kubernetesApiUrl": "https://10.42.0.10:6443",
        "kubernetesToken": secret("eyJhbGciOiJSUzI1NiJ9.e30.sig"),
        "kubernetesAuthorizationType": "rbac",
        "managed": False,
    }
    return Resource("gitlab:index/projectCluster:ProjectCluster", "gitlab-k8s-cluster", inputs)


def cluster_agent() -> Resource:
    """GitLab's agent of clusterIntegration agent (components/gitlab_integration.py)."""
    inputs = {"project": "101", "name": "k8s-cluster"}
    return Resource(
        "gitlab:index/clusterAgent:ClusterAgent", "gitlab-k8s-agent", inputs, outputs={**inputs, "agentId": 7}
    )


def service_account_token(account: str, namespace: str = "kube-system") -> Resource:
    """A long-lived token Secret for a ServiceAccount, as the certificate-based integration creates it."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"{account}-token",
            "namespace": namespace,
            "annotations": {"kubernetes.io/service-account.name": account},
        },
        "type": "kubernetes.io/service-account-token",
    }
    return Resource(
        "kubernetes:core/v1:Secret",
        f"{account}-token",
        body,
        outputs={**body, "data": secret({"token": "ZXlK", "ca.crt": "LS0t"})},
        additional_secret_outputs=["data", "stringData"],
    )


def application_settings(signup_enabled: bool | None) -> Resource:
    inputs: dict[str, Any] = {"allowLocalRequestsFromWebHooksAndServices": True}
    if signup_enabled is not None:
        inputs["signupEnabled"] = signup_enabled
    return Resource("gitlab:index/applicationSettings:ApplicationSettings", "gitlab-settings", inputs)


def repository_file(path: str, content: str, name: str | None = None) -> Resource:
    inputs = {
        "project": "101",
        "branch": "main",
        "filePath": path,
        "encoding": "base64",
        "content": base64.b64encode(content.encode()).decode(),
        "commitMessage": f"Add {path}",
    }
    return Resource("gitlab:index/repositoryFile:RepositoryFile", name or path.replace("/", "-"), inputs)
