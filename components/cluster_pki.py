"""The cluster's PKI and bootstrap token, made by Pulumi before any host exists.

So every node can pin the CA (caCertHashes) and join in parallel, and the kubeconfig needs no copy
from the control plane. Private material lives only in Pulumi state, as secrets. A phase of
``KubeadmCluster`` (components/cluster.py): its resources are the cluster's children.

The material every control-plane node must share (kubeadm "Creating Highly Available Clusters with
kubeadm", manual certificate distribution; ``certs.SharedCertificateExists``): the cluster CA, the
service-account signing key pair, the front-proxy CA and the etcd CA. All four are made here and
placed on the first node before ``kubeadm init``, which then uses them instead of generating its
own ("If both files already exist, kubeadm skips the generation step"), and on every further
control-plane node before its ``kubeadm join --control-plane``: no ``--upload-certs``, no
``kubeadm-certs`` Secret in the cluster. Every other certificate (API server, etcd server and peer,
kubelet client...) each node makes for itself, with its own addresses.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_random as random
import pulumi_tls as tls

from components import kubeadm

CA_VALIDITY_HOURS = 87600  # 10 years, kubeadm's own CA validity (caCertificateValidityPeriod default)
CA_USES = ["cert_signing", "key_encipherment", "digital_signature"]  # kubeadm's CAs' key usages
ADMIN_CERT_VALIDITY_HOURS = 8760  # 1 year, like kubeadm's admin.conf
ADMIN_CERT_EARLY_RENEWAL_HOURS = 720  # `pulumi up` in the last 30 days issues a new one


@dataclass(frozen=True)
class ClusterPki:
    ca_cert_pem: pulumi.Output[str]
    ca_key_pem: pulumi.Output[str]  # secret
    ca_cert_hash: pulumi.Output[str]  # sha256:<hex>, what joins pin
    admin_cert_pem: pulumi.Output[str]
    admin_key_pem: pulumi.Output[str]  # secret
    bootstrap_token: pulumi.Output[str]  # secret, <id>.<secret>
    ca_public_key_pem: pulumi.Output[str]  # the cluster's identity (kubeadm.cluster_identifier)
    # The rest of what control-plane nodes share, kubeadm's file names in brackets.
    service_account_key_pem: pulumi.Output[str]  # secret [sa.key]
    service_account_public_key_pem: pulumi.Output[str]  # [sa.pub]
    front_proxy_ca_cert_pem: pulumi.Output[str]  # [front-proxy-ca.crt]
    front_proxy_ca_key_pem: pulumi.Output[str]  # secret [front-proxy-ca.key]
    etcd_ca_cert_pem: pulumi.Output[str]  # [etcd/ca.crt]
    etcd_ca_key_pem: pulumi.Output[str]  # secret [etcd/ca.key]

    def shared_material(self) -> pulumi.Output[list[str]]:
        """Every file of kubeadm.SHARED_PKI_FILES, in that order (secret: it holds the CA keys)."""
        return pulumi.Output.secret(
            pulumi.Output.all(
                self.ca_cert_pem,
                self.ca_key_pem,
                self.service_account_key_pem,
                self.service_account_public_key_pem,
                self.front_proxy_ca_cert_pem,
                self.front_proxy_ca_key_pem,
                self.etcd_ca_cert_pem,
                self.etcd_ca_key_pem,
            )
        )

    def shared_public_digests(self) -> pulumi.Output[str]:
        """sha256 of each shared public file, as `<file>=<hex>` words: what a node's copies must match."""
        return pulumi.Output.all(
            self.service_account_public_key_pem, self.front_proxy_ca_cert_pem, self.etcd_ca_cert_pem
        ).apply(lambda pems: kubeadm.shared_public_digests(*pems))


def cluster_pki(name: str, parent: pulumi.Resource) -> ClusterPki:
    child = pulumi.ResourceOptions(parent=parent)
    # RSA 2048 is kubeadm's default encryptionAlgorithm, so the CA matches the keys it makes.
    ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="RSA", rsa_bits=2048, opts=child)
    ca_cert = tls.SelfSignedCert(
        f"{name}-ca",
        private_key_pem=ca_key.private_key_pem,
        subject=tls.SelfSignedCertSubjectArgs(common_name="kubernetes"),  # kubeadm's CA name
        is_ca_certificate=True,
        validity_period_hours=CA_VALIDITY_HOURS,
        allowed_uses=CA_USES,
        opts=child,
    )
    admin_key = tls.PrivateKey(f"{name}-admin-key", algorithm="RSA", rsa_bits=2048, opts=child)
    admin_csr = tls.CertRequest(
        f"{name}-admin-csr",
        private_key_pem=admin_key.private_key_pem,
        # The organization is the Kubernetes group: see kubeadm.ADMIN_GROUP for why not system:masters.
        subject=tls.CertRequestSubjectArgs(common_name=kubeadm.ADMIN_USER, organization=kubeadm.ADMIN_GROUP),
        opts=child,
    )
    admin_cert = tls.LocallySignedCert(
        f"{name}-admin-cert",
        cert_request_pem=admin_csr.cert_request_pem,
        ca_private_key_pem=ca_key.private_key_pem,
        ca_cert_pem=ca_cert.cert_pem,
        validity_period_hours=ADMIN_CERT_VALIDITY_HOURS,
        early_renewal_hours=ADMIN_CERT_EARLY_RENEWAL_HOURS,
        allowed_uses=["digital_signature", "key_encipherment", "client_auth"],
        opts=child,
    )
    # Bootstrap token [a-z0-9]{6}.[a-z0-9]{16}: the id is public (it names the Secret), the second
    # half is the credential, hence a RandomPassword (stored as a secret by the provider).
    token_id = random.RandomString(
        f"{name}-token-id", length=6, lower=True, numeric=True, upper=False, special=False, opts=child
    )
    token_secret = random.RandomPassword(
        f"{name}-token-secret", length=16, lower=True, numeric=True, upper=False, special=False, opts=child
    )
    # The service accounts' token signing key: kubeadm makes an RSA 2048 key pair (sa.key, and sa.pub
    # as a PKIX "PUBLIC KEY"), which is what these PEM outputs are.
    service_account_key = tls.PrivateKey(f"{name}-sa-key", algorithm="RSA", rsa_bits=2048, opts=child)
    front_proxy_key, front_proxy_ca = _ca(name, "front-proxy-ca", child)
    etcd_key, etcd_ca = _ca(name, "etcd-ca", child)
    return ClusterPki(
        ca_cert_pem=ca_cert.cert_pem,
        ca_key_pem=pulumi.Output.secret(ca_key.private_key_pem),
        ca_cert_hash=ca_cert.cert_pem.apply(kubeadm.ca_cert_hash),
        admin_cert_pem=admin_cert.cert_pem,
        admin_key_pem=pulumi.Output.secret(admin_key.private_key_pem),
        bootstrap_token=pulumi.Output.secret(pulumi.Output.concat(token_id.result, ".", token_secret.result)),
        ca_public_key_pem=ca_key.public_key_pem,
        service_account_key_pem=pulumi.Output.secret(service_account_key.private_key_pem),
        service_account_public_key_pem=service_account_key.public_key_pem,
        front_proxy_ca_cert_pem=front_proxy_ca.cert_pem,
        front_proxy_ca_key_pem=pulumi.Output.secret(front_proxy_key.private_key_pem),
        etcd_ca_cert_pem=etcd_ca.cert_pem,
        etcd_ca_key_pem=pulumi.Output.secret(etcd_key.private_key_pem),
    )


def _ca(name: str, common_name: str, child: pulumi.ResourceOptions) -> tuple[tls.PrivateKey, tls.SelfSignedCert]:
    """A 10-year CA named as kubeadm names its own (front-proxy-ca, etcd-ca), for <cluster>-<common name>."""
    key = tls.PrivateKey(f"{name}-{common_name}-key", algorithm="RSA", rsa_bits=2048, opts=child)
    cert = tls.SelfSignedCert(
        f"{name}-{common_name}",
        private_key_pem=key.private_key_pem,
        subject=tls.SelfSignedCertSubjectArgs(common_name=common_name),
        is_ca_certificate=True,
        validity_period_hours=CA_VALIDITY_HOURS,
        allowed_uses=CA_USES,
        opts=child,
    )
    return key, cert
