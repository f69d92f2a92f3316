"""The VPC's flow logs: every accepted and rejected connection, kept in CloudWatch Logs for a set time.

A phase of ``Network`` (components/network.py). The flow-logs service writes with a role that
trusts only it, only for flow logs of this account (the confused-deputy conditions AWS recommends),
and may write to this one log group only (AWS VPC user guide, "IAM role for publishing flow logs to
CloudWatch Logs": the documented policy uses "*", narrowed here to the group's ARN). Log data is
encrypted at rest by CloudWatch Logs itself; no customer-managed key (README "Security model").
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from components.config import StackConfig

# Aggregation window of a flow log record, seconds (60 or 600; 600 is AWS's default and the cheaper).
AGGREGATION_SECONDS = 600


def log_group_name(config: StackConfig) -> str:
    return f"/{config.project}/{config.stack}/vpc-flow-logs"


def trust_policy(account_id: str, partition: str, region: str) -> dict[str, Any]:
    """Only the flow-logs service may assume the role, and only for this account's flow logs."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account_id},
                    "ArnLike": {"aws:SourceArn": f"arn:{partition}:ec2:{region}:{account_id}:vpc-flow-log/*"},
                },
            }
        ],
    }


def write_policy(log_group_arn: str) -> dict[str, Any]:
    """Create streams in, and write to, one log group (its streams are `<group ARN>:log-stream:<name>`)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "WriteFlowLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                "Resource": [log_group_arn, f"{log_group_arn}:*"],
            },
            {
                "Sid": "FindTheLogGroup",
                "Effect": "Allow",
                "Action": ["logs:DescribeLogGroups"],
                "Resource": "*",
            },
        ],
    }


def vpc_flow_logs(name: str, config: StackConfig, vpc: aws.ec2.Vpc, parent: pulumi.Resource) -> aws.ec2.FlowLog:
    """Log group (retention flowLogRetentionDays), the writer role, and the VPC's flow log."""
    child = pulumi.ResourceOptions(parent=parent)
    group = aws.cloudwatch.LogGroup(
        f"{name}-flow-logs",
        name=log_group_name(config),
        retention_in_days=config.flow_log_retention_days,
        tags=config.tags(f"{name}-flow-logs"),
        opts=child,
    )
    identity = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=parent))
    partition = aws.get_partition_output(opts=pulumi.InvokeOptions(parent=parent))
    region = aws.get_region_output(opts=pulumi.InvokeOptions(parent=parent))
    role = aws.iam.Role(
        f"{name}-flow-logs-role",
        assume_role_policy=pulumi.Output.all(identity.account_id, partition.partition, region.region).apply(
            lambda values: json.dumps(trust_policy(values[0], values[1], values[2]))
        ),
        tags=config.tags(f"{name}-flow-logs-role"),
        opts=child,
    )
    permission = aws.iam.RolePolicy(
        f"{name}-flow-logs-write",
        role=role.id,
        policy=group.arn.apply(lambda arn: json.dumps(write_policy(arn))),
        opts=child,
    )
    return aws.ec2.FlowLog(
        f"{name}-flow-log",
        vpc_id=vpc.id,
        traffic_type="ALL",
        log_destination_type="cloud-watch-logs",
        log_destination=group.arn,
        iam_role_arn=role.arn,
        max_aggregation_interval=AGGREGATION_SECONDS,
        tags=config.tags(f"{name}-flow-log"),
        # Delivery starts with the role able to write (an error is logged on the flow log otherwise).
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[permission]),
    )
