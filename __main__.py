"""Composition root: read the configuration, build the components, export what a user needs.

Reads like the architecture diagram in the README; each concept lives in components/.
"""

import pulumi

from components.config import load_config
from components.network import Network, NetworkArgs

config = load_config()

network = Network("gitops", NetworkArgs(config=config))

pulumi.export("vpcId", network.vpc_id)
pulumi.export("subnetIds", network.subnet_ids)
pulumi.export("availabilityZones", network.availability_zones)
